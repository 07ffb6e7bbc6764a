"""Config sections of `almr run` that no component owns: the pipeline's own settings (`pipeline`)
and the empathy stage (`empathy`: C-SFT-Empathy, SFT again from C-SFT on emotional-support data)."""

from typing import Literal

from pydantic import Field

from almr.data.config import ChatDatasetConfig
from almr.section import Section


class EmpathyConfig(Section):
    """The `empathy` stage: C-SFT-Empathy, the `sft` section's trainer run again from the C-SFT model
    on emotional-support dialogues (the paper's ESConv-style data)."""

    steps: int | None = Field(100, ge=1, description="Optimizer steps; None: sft.epochs over the data.")
    lr: float | None = Field(None, gt=0, description="Peak LR; None: sft.optimizer.lr.")
    datasets: list[ChatDatasetConfig] = Field(
        default_factory=list,
        description="Emotional-support data sets; empty: the demo world's ESConv-style set, less the dialogues "
        "held out as the pairwise study's prompts (pipeline.pairwise_dialogues).",
    )


class PipelineConfig(Section):
    """`almr run`: what the pipeline measures besides the components' own sections, and how it reports."""

    progress_every_s: float = Field(
        30.0, gt=0, description="Without a terminal, a progress line per running stage at most this often."
    )
    zh_questions: int = Field(
        100, ge=1, description="The eval stage's %Chinese: greedy chat replies to this many of the world's Chinese "
        "questions (its C-Eval set)."
    )  # fmt: skip
    zh_new_tokens: int = Field(32, ge=1, description="Most tokens of each of those replies.")
    pairwise_dialogues: int = Field(
        24, ge=2, description="Chinese emotional-support dialogues held out of the empathy data: the pairwise "
        "study's prompts (their first user turn)."
    )  # fmt: skip
    pairwise_models: list[str] = Field(
        default_factory=lambda: ["c-sft-empathy", "c-dpo", "instruct"],
        description="The eval stage's models compared pairwise (Table 8); those not built are left out.",
    )
    judge: bool = Field(
        True, description="Judge the pairwise items automatically (the demo has no annotators): on the demo world by "
        "the world's rule (almr.world.judge: the reply in the user's language, then the one with more of the world's "
        "supporter phrases); for a config that names its model, by the empathy model served in-process as an LLM "
        "judge. Human votes (`almr pairwise annotate`) are reported before either."
    )  # fmt: skip
    dialogues: str | None = Field(
        None, description="For a config that names its model (model.name_or_path): the pairwise study's dialogues, "
        "a JSON Lines file of {id, turns: [{role, content}, ...]} (logged conversations; `almr pairwise make`'s "
        "input). The demo world holds its own out of the empathy data."
    )  # fmt: skip
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="How the eval and pairwise stages run the models: in their own process "
        "through transformers, or each behind its own `vllm serve` on 127.0.0.1 (GPUs; the vllm package): the eval "
        "stage one model at a time, the pairwise stage the compared models at once, sharing the GPU memory evenly."
    )  # fmt: skip
    vllm_start_timeout_s: float = Field(
        900.0, gt=0, description="With engine vllm: how long a server may take to answer /health (loading weights)."
    )
    eval_tasks: list[str] = Field(
        default_factory=lambda: ["paper"],
        description="For a config that names its model: the eval stage's suites or tasks (`almr eval tasks`); "
        "base and CPT models skip the chat tasks among them. eval.data_dir holds the files of those without a "
        "public data set. The demo world is scored on its own suite.",
    )
