"""Config sections of the stages that are not a component's own: the demo world's base model
(`base`) and the Table 6 ablation (`ablation`)."""

from pydantic import Field

from almr.data.config import BatchConfig
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
