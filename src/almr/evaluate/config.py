"""Config section of evaluation (`eval`): data, batching, the averaged metric, probe and judge."""

from pydantic import Field

from almr.section import Section


class EvalProbeConfig(Section):
    """The world probe suite the CPT trainer runs every cpt.probe.every_tokens (almr.evaluate.probe)."""

    items_per_task: int = Field(32, ge=1, description="Items of each probe task, the first N of its file, every call.")
    tasks: list[str] = Field(
        default_factory=lambda: ["world_mmlu", "world_ceval", "world_eprstmt", "world_seceu"],
        description="Log-likelihood world tasks the probe scores.",
    )
    batch_size: int = Field(64, ge=1, description="Sequences per forward pass.")


class JudgeConfig(Section):
    """The LLM judge of BelleEval and the Turing test: any OpenAI-compatible chat endpoint."""

    url: str | None = Field(None, description="Judge base URL, e.g. http://127.0.0.1:8000/v1.")
    model: str | None = Field(None, description="Judge model name; default: the first of GET URL/models.")
    timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one judge reply.")
    retries: int = Field(
        3, ge=0, description="Retries of a failed or timed-out judge call before the item is reported."
    )
    prompts_dir: str | None = Field(None, description="Folder of judge prompt files; default: the shipped ones.")


class EvalConfig(Section):
    """Evaluation on lm-evaluation-harness: data, batching, the averaged metric, probe and judge."""

    data_dir: str | None = Field(
        None, description="Folder of benchmark files in their published layouts (a world directory for world tasks)."
    )
    batch_size: int = Field(16, ge=1, description="lm-eval batch size (requests per forward pass or API call).")
    limit: int | None = Field(None, ge=1, description="Items per task (for quick looks; results record it).")
    max_gen_toks: int | None = Field(None, ge=1, description="Cap on generated tokens for every generation task.")
    allow_code_execution: bool = Field(
        False, description="Run model-written code for HumanEval (sandboxed subprocess, time limit)."
    )
    timeout_s: int = Field(120, ge=1, description="Seconds per request to a model endpoint.")
    max_retries: int = Field(3, ge=0, description="Retries per request to a model endpoint.")
    average: list[str] = Field(
        default_factory=lambda: ["world_mmlu", "world_ceval", "world_eprstmt"],
        description="Scores (task or task:metric, each 0-100) whose mean is the averaged metric the sweep ranks by.",
    )
    probe: EvalProbeConfig = Field(default_factory=EvalProbeConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
