"""Typed configuration: one pydantic section per concern, read from YAML, overridden by
`--set a.b=value`, validated whole before any compute is spent.

Values apply as defaults, then the YAML file, then each `--set` in order. Unknown keys,
wrong types and impossible values are refused with one message that names the key and the
fix (`ConfigError`, exit code 2 on the command line). Relative paths are relative to the
working directory, as for any command-line tool.
"""

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from almr.errors import ConfigError


class Section(BaseModel):
    """A config section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- world


class TinyLlamaConfig(Section):
    """Shape of the demo world's base model: a Llama-3-style decoder of about 1M parameters."""

    hidden_size: int = Field(128, ge=8, description="Width of the residual stream.")
    intermediate_size: int = Field(384, ge=8, description="Width of the SwiGLU MLP.")
    num_hidden_layers: int = Field(4, ge=1, description="Decoder layers.")
    num_attention_heads: int = Field(4, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention, as Llama-3).")
    max_position_embeddings: int = Field(512, ge=16, description="Longest sequence the model is built for.")
    rope_theta: float = Field(500000.0, gt=0, description="RoPE base (Llama-3 uses 500000).")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyLlamaConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}; choose a head count that divides it"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}; choose a divisor"
            )
        return self


class WorldConfig(Section):
    """The embedded bilingual demo world: what `almr world build` generates."""

    seed: int = Field(0, description="Everything in the world is a deterministic function of this seed.")
    countries: int = Field(60, ge=12, le=150, description="Countries in the fact base (CLDR territories).")
    zh_country_share: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Fraction of countries whose facts the Chinese corpus states; the others' "
        "facts are in English only, so Chinese questions about them measure cross-lingual transfer.",
    )
    en_docs: int = Field(9000, ge=10, description="English training documents.")
    zh_docs: int = Field(9000, ge=10, description="Chinese training documents.")
    math_docs: int = Field(3000, ge=10, description="Math training documents (both languages).")
    code_docs: int = Field(2000, ge=10, description="Code training documents.")
    valid_fraction: float = Field(
        0.05, gt=0.0, lt=0.5, description="Held-out validation documents, as a fraction of each source's training documents."
    )
    bench_items: int = Field(200, ge=4, description="Items per benchmark.")
    sft_dialogues: int = Field(2000, ge=4, description="SFT dialogues (half English, half Chinese).")
    dpo_pairs: int = Field(1000, ge=4, description="DPO preference pairs (half English, half Chinese).")
    vocab_size: int = Field(2048, ge=300, le=65535, description="Byte-level BPE vocabulary size, special tokens included.")
    model: TinyLlamaConfig = Field(default_factory=TinyLlamaConfig)


# --------------------------------------------------------------------------- model, cluster


class ModelConfig(Section):
    """The model a stage starts from."""

    name_or_path: str | None = Field(
        None, description="A local Hugging Face model directory, or a hub id where the machine is online."
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Training precision: bfloat16 autocast on GPUs, float32 on CPUs."
    )


class ParallelConfig(Section):
    """How many processes a stage runs on and how the model is split across them."""

    nodes: int = Field(1, ge=1, description="Machines.")
    gpus_per_node: int = Field(1, ge=1, description="Processes per machine (one per GPU).")
    tensor_parallel: int = Field(1, ge=1, description="Tensor-parallel degree (Megatron-style; the paper used 2 for 8B, 8 for 70B).")
    pipeline_parallel: int = Field(1, ge=1, description="Pipeline-parallel degree (the paper used 2 for 70B).")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def data_parallel(self) -> int:
        return self.world_size // (self.tensor_parallel * self.pipeline_parallel)

    @model_validator(mode="after")
    def _splits_evenly(self) -> "ParallelConfig":
        model_parallel = self.tensor_parallel * self.pipeline_parallel
        if self.world_size % model_parallel:
            raise ValueError(
                f"nodes × gpus_per_node = {self.world_size} is not divisible by tensor_parallel × "
                f"pipeline_parallel = {model_parallel}; change the GPU count or the parallel degrees"
            )
        return self


# --------------------------------------------------------------------------- training stages


class BatchConfig(Section):
    micro_batch_size: int = Field(4, ge=1, description="Sequences per process per forward pass.")
    global_batch_size: int = Field(256, ge=1, description="Sequences per optimizer step, over all processes; gradient accumulation fills it.")
    seq_len: int = Field(2048, ge=8, description="Tokens per sequence.")


class OptimizerConfig(Section):
    name: Literal["adamw"] = Field("adamw", description="The optimizer (the paper: AdamW).")
    lr: float = Field(3e-5, gt=0, description="Peak learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Global gradient-norm clip; 0 disables it.")

    @model_validator(mode="after")
    def _betas_in_range(self) -> "OptimizerConfig":
        for beta in self.betas:
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas {list(self.betas)} must each lie in [0, 1), e.g. [0.9, 0.95]")
        return self


class ScheduleConfig(Section):
    kind: Literal["linear", "cosine", "wsd"] = Field("linear", description="Decay after warmup: linear, cosine or warmup-stable-decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup from 0 to the peak learning rate.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Final learning rate as a fraction of the peak.")
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="wsd only: the fraction of steps spent decaying.")


class StageConfig(Section):
    """One training stage (CPT, SFT or DPO): batch shape, optimizer and schedule."""

    batch: BatchConfig = Field(default_factory=BatchConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


# --------------------------------------------------------------------------- whole config


class AlmrConfig(Section):
    """Everything a run of almr reads; each stage receives only its own section."""

    world: WorldConfig = Field(default_factory=WorldConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    cpt: StageConfig = Field(default_factory=StageConfig)
    sft: StageConfig = Field(default_factory=StageConfig)
    dpo: StageConfig = Field(default_factory=StageConfig)

    @model_validator(mode="after")
    def _batches_fill_the_cluster(self) -> "AlmrConfig":
        dp = self.parallel.data_parallel
        for name in ("cpt", "sft", "dpo"):
            batch: BatchConfig = getattr(self, name).batch
            per_step = batch.micro_batch_size * dp
            if batch.global_batch_size % per_step:
                fix = max(per_step, round(batch.global_batch_size / per_step) * per_step)
                raise ValueError(
                    f"{name}.batch.global_batch_size: {batch.global_batch_size} is not divisible by "
                    f"micro_batch_size × data_parallel = {batch.micro_batch_size} × {dp} = {per_step}; "
                    f"set it to a multiple of {per_step} (e.g. {fix})"
                )
        return self


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> AlmrConfig:
    """Defaults, then the YAML file at `path`, then each `a.b=value` override, validated whole."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file (see configs/)")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections (world:, cpt:, ...), not a {type(loaded).__name__}")
        raw = loaded
    for override in overrides:
        _apply_override(raw, override)
    if overrides:
        where += " with --set " + " ".join(overrides)
    try:
        return AlmrConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"invalid config ({where}):\n" + _describe(err, AlmrConfig)) from None


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, the form stored in every run folder."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. --set cpt.optimizer.lr=1e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(err: ValidationError, root: type[BaseModel]) -> str:
    lines = []
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join(loc)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = _known_keys(root, loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f"did you mean '{'.'.join([*loc[:-1], close[0]])}'? " if close else ""
            lines.append(f"  {key}: unknown key; {hint}known keys here: {', '.join(known)}")
        elif item["type"] == "missing":
            lines.append(f"  {key}: required; set it in the file or with --set {key}=...")
        elif key:
            lines.append(f"  {key}: {message} (got {item['input']!r})")
        else:
            lines.append(f"  {message}")
    return "\n".join(lines)


def _known_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []
