"""Config sections of the stages that are not a component's own: the demo world's base model
(`base`), the Table 6 ablation (`ablation`) and the baselines the paper compares against
(`baselines`)."""

from pydantic import Field

from almr.data.config import BatchConfig, ChatDatasetConfig
from almr.section import Section
from almr.train.config import OptimizerConfig, ScheduleConfig, StageConfig


class BaseModelConfig(StageConfig):
    """The `base` stage (`almr world pretrain`): the demo world's base model, trained from random
    initialization by the CPT trainer on a mostly-English mixture, so that it plays Llama-3's part
    (good at English, weak at Chinese). Was `world.pretrain`."""

    batch: BatchConfig = Field(
        default_factory=lambda: BatchConfig(micro_batch_size=16, global_batch_size=16, seq_len=256)
    )
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(lr=3e-3, weight_decay=0.01))
    schedule: ScheduleConfig = Field(
        default_factory=lambda: ScheduleConfig(kind="cosine", warmup_steps=20, min_lr_ratio=0.1)
    )
    tokens: int = Field(1_000_000, ge=1, description="Pretraining tokens.")
    almr: float = Field(0.05, ge=0.0, le=1.0, description="Share of Chinese tokens in the pretraining mixture.")
    sub_weights: dict[str, float] = Field(
        default_factory=lambda: {"en": 0.74, "math": 0.13, "code": 0.13},
        description="Relative weights of the other sources (English, math, code).",
    )
    seed: int = Field(0, description="Seeds the random initialization and the mixture's shuffles.")
    probe_every_tokens: int = Field(
        131072, ge=0, description="Score the world's probe suite every this many tokens (0: off), for trajectories."
    )


class AblationConfig(Section):
    """`almr ablation CONFIG`: the paper's Table 6 — C-DPO with and without CPT, with and without the
    additional language's fine-tuning data; each cell SFT → DPO (the sft and dpo sections) → evaluation."""

    out_dir: str = Field("runs/ablation", description="Folder of the study: one sub-folder per cell, table.md.")
    cpt_model: str | None = Field(None, description="The CPT checkpoint the 'with CPT' cells start from.")
    base_model: str | None = Field(None, description="The base checkpoint the 'without CPT' cells start from.")
    language: str = Field(
        "zh", description="Fine-tuning data sets tagged with this language are left out in the 'without' cells."
    )
    tasks: list[str] = Field(
        default_factory=lambda: ["world_lcsts", "world_eprstmt", "world_ceval", "world_zh_share"],
        description="Evaluation tasks or suites of every cell (eval.data_dir and eval.limit apply).",
    )


class InstructBaselineConfig(Section):
    """The "Instruct" baseline: SFT then DPO on the base model, no CPT, on the world's English-dominant
    instruct sets (instruct/sft.jsonl, instruct/dpo.jsonl), as Llama-3-Instruct was made from Llama-3.
    Batch, optimizer, schedule and length come from the sft and dpo sections, as for C-SFT and C-DPO."""

    model: str | None = Field(
        None, description="An existing instruct model (a local directory or hub id, e.g. "
        "meta-llama/Meta-Llama-3-8B-Instruct, the paper's baseline) used as it is instead of building one."
    )  # fmt: skip
    sft_datasets: list[ChatDatasetConfig] = Field(
        default_factory=list, description="SFT data of the baseline; empty: the world's instruct/sft.jsonl."
    )
    dpo_datasets: list[ChatDatasetConfig] = Field(
        default_factory=list, description="DPO pairs of the baseline; empty: the world's instruct/dpo.jsonl."
    )


class FixedCptConfig(Section):
    """A fixed-recipe CPT in the style of Chinese-LLaMA: a 2:8 Chinese-to-rest mixture and a conventional
    learning rate instead of the measured (ALMR, LR), on the formal CPT's token budget (the cpt section)."""

    almr: float = Field(0.2, ge=0.0, le=1.0, description="ALMR of the recipe (Chinese-LLaMA's 2:8 mixture).")
    lr: float = Field(
        2.0e-3,
        gt=0.0,
        description="Peak learning rate of the recipe. Chinese-LLaMA continued LLaMA-7B at 2e-4, 2/3 of LLaMA's own "
        "pretraining peak (3e-4); the demo world's base pretrains at 3e-3 (base.optimizer.lr), so 2e-3 here. For "
        "Llama-3 8B (pretraining peak 3e-4) set 2e-4.",
    )


class BaselinesConfig(Section):
    """The `baselines` stage: the models the paper compares against, built from the same base model on the
    same world — the Instruct model (SFT + DPO without CPT) and a fixed-recipe CPT."""

    instruct: InstructBaselineConfig = Field(default_factory=InstructBaselineConfig)
    fixed_cpt: FixedCptConfig = Field(default_factory=FixedCptConfig)
