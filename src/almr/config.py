"""The whole configuration: the components' sections composed, read from YAML, overridden by
`--set a.b=value`, validated whole before any compute is spent.

Each section lives beside the code that reads it (`data/config.py`, `train/config.py`,
`evaluate/config.py`, `sweep/config.py`, `frontier/config.py`, `world/config.py`,
`stages/config.py`, `run/config.py`); this module only composes them, checks what spans two sections, loads
files and presets, and applies overrides.

Values apply as defaults, then the YAML file, then each `--set` in order. Unknown keys,
wrong types and impossible values are refused with one message that names the key and the
fix (`ConfigError`, exit code 2 on the command line). Relative paths are relative to the
working directory, as for any command-line tool.
"""

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from almr.data.config import BatchConfig, DataConfig, MixtureConfig
from almr.errors import ConfigError
from almr.evaluate.config import EvalConfig
from almr.frontier.config import FrontierConfig
from almr.pairwise.config import PairwiseConfig
from almr.run.config import EmpathyConfig, PipelineConfig
from almr.section import Section
from almr.serve.config import ServeConfig
from almr.stages.config import AblationConfig, BaselinesConfig, BaseModelConfig
from almr.sweep.config import SweepConfig
from almr.train.config import CptConfig, DpoConfig, ModelConfig, ParallelConfig, SftConfig
from almr.vocab.config import VocabConfig
from almr.world.config import WorldConfig

# Keys that moved: an old spelling is refused with a message that names the new one.
RENAMED = {"world.pretrain": "base"}
# Keys of which a config sets at most one: a --set of one replaces the others the file set.
ALTERNATIVES = (("cpt.steps", "cpt.total_tokens"),)


class AlmrConfig(Section):
    """Everything a run of almr reads; each stage receives only its own section."""

    world: WorldConfig = Field(default_factory=WorldConfig, description="The demo world generator.")
    base: BaseModelConfig = Field(default_factory=BaseModelConfig, description="The demo world's base model.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model a stage starts from.")
    parallel: ParallelConfig = Field(default_factory=ParallelConfig, description="Processes and model splitting.")
    cpt: CptConfig = Field(default_factory=CptConfig, description="The CPT trainer.")
    sft: SftConfig = Field(default_factory=SftConfig, description="Supervised fine-tuning (almr sft).")
    dpo: DpoConfig = Field(default_factory=DpoConfig, description="Direct preference optimization (almr dpo).")
    data: DataConfig = Field(default_factory=DataConfig, description="Corpora and their shards.")
    mixture: MixtureConfig = Field(default_factory=MixtureConfig, description="The CPT mixture and its ALMR.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation, probe and judge.")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="The ALMR × LR study.")
    frontier: FrontierConfig = Field(default_factory=FrontierConfig, description="The frontier analysis.")
    vocab: VocabConfig = Field(default_factory=VocabConfig, description="Vocabulary extension (almr vocab extend).")
    ablation: AblationConfig = Field(default_factory=AblationConfig, description="The Table 6 ablation.")
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig, description="The baselines stage's models.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="The chat server (almr serve).")
    pairwise: PairwiseConfig = Field(default_factory=PairwiseConfig, description="Blind pairwise study (Table 8).")
    empathy: EmpathyConfig = Field(default_factory=EmpathyConfig, description="C-SFT-Empathy (the empathy stage).")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="almr run: its measurements, output.")

    @property
    def names_a_model(self) -> bool:
        """The config names its base model (model.name_or_path): the pipeline runs on it and the
        config's data; otherwise on the demo world, whose base model it trains."""
        return self.model.name_or_path is not None

    @model_validator(mode="after")
    def _batches_fill_the_cluster(self) -> "AlmrConfig":
        # the CPT splits each model copy over parallel.tensor_parallel GPUs; TRL's SFT and DPO run plain
        # FSDP, every process a data-parallel one
        for name, dp, what in (("cpt", self.parallel.data_parallel, "data_parallel"),
                               ("sft", self.parallel.world_size, "processes"),
                               ("dpo", self.parallel.world_size, "processes")):  # fmt: skip
            batch: BatchConfig = getattr(self, name).batch
            per_step = batch.micro_batch_size * dp
            if batch.global_batch_size % per_step:
                fix = max(per_step, round(batch.global_batch_size / per_step) * per_step)
                raise ValueError(
                    f"{name}.batch.global_batch_size: {batch.global_batch_size} is not divisible by "
                    f"micro_batch_size × {what} = {batch.micro_batch_size} × {dp} = {per_step}; "
                    f"set it to a multiple of {per_step} (e.g. {fix})"
                )
        return self

    @model_validator(mode="after")
    def _mixture_names_known(self) -> "AlmrConfig":
        known = [s.name for s in self.data.sources]
        if not known:
            return self
        named = [
            ("mixture.sources", self.mixture.sources or []),
            ("mixture.weights", list(self.mixture.weights or {})),
            ("mixture.sub_weights", list(self.mixture.sub_weights)),
        ]
        for key, names in named:
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(
                    f"{key}: unknown source(s) {', '.join(unknown)}; known sources (data.sources): {', '.join(known)}"
                )
        return self



PRESETS = Path(__file__).parent / "configs"


def presets() -> list[str]:
    """Names of the shipped configs (`demo`, `paper-llama3-8b`, ...), usable wherever a file is."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> AlmrConfig:
    """Defaults, then the YAML file at `path` (or a shipped preset of that name), then each
    `a.b=value` override, validated whole."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file() and str(path) in presets():
            path = PRESETS / f"{path}.yaml"
        where = str(path)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} does not exist; pass the path of a YAML file or a preset: {', '.join(presets())}"
            )
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of sections (world:, cpt:, ...), not a {type(loaded).__name__}"
            )
        raw = loaded
        _refuse_renamed(raw, str(path))
    overridden: set[str] = set()
    for override in overrides:
        _refuse_renamed(_apply_override({}, override), f"--set {override}")
        _drop_alternatives(raw, override, overridden)
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


def config_keys(
    model: type[BaseModel] | None = None, prefix: str = "", defaults: BaseModel | None = None
) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) of every leaf key, for `almr config keys`. A nested
    section's defaults are those of the instance its parent builds (`base.optimizer.lr` is 3e-3,
    not OptimizerConfig's own 3e-5)."""
    model = model or AlmrConfig
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if defaults is not None:
            value = getattr(defaults, name)
        else:
            value = None if field.is_required() else field.get_default(call_default_factory=True)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += config_keys(annotation, key + ".", value if isinstance(value, BaseModel) else None)
            continue
        if typing.get_origin(annotation) is list and typing.get_args(annotation):
            item = typing.get_args(annotation)[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                rows += config_keys(item, key + "[].")
                continue
        type_name = str(annotation).replace("typing.", "") if not isinstance(annotation, type) else annotation.__name__
        default = "required" if field.is_required() and defaults is None else repr(value)
        rows.append((key, type_name, default, field.description or ""))
    return rows


def _refuse_renamed(raw: dict[str, Any], where: str) -> None:
    for old, new in RENAMED.items():
        node: Any = raw
        for part in old.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            raise ConfigError(f"{where}: the key {old} was renamed to {new}; write {new}.… instead of {old}.…")


def _drop_alternatives(raw: dict[str, Any], override: str, overridden: set[str]) -> None:
    """A --set of one of ALTERNATIVES replaces the others where an earlier layer (the file) set
    them: `--set cpt.steps=10` on a preset with cpt.total_tokens. Both on the command line stay
    an error that names them."""
    key, _, text = override.partition("=")
    key = key.strip()
    overridden.add(key)
    if text.strip() in ("", "null", "~"):
        return
    for group in ALTERNATIVES:
        if key in group:
            for other in group:
                *parents, leaf = other.split(".")
                node: Any = raw
                for part in parents:
                    node = node.get(part) if isinstance(node, dict) else None
                if other != key and other not in overridden and isinstance(node, dict):
                    node.pop(leaf, None)


def _apply_override(raw: dict[str, Any], override: str) -> dict[str, Any]:
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
    return raw


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
