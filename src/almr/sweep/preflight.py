"""What `almr sweep` checks once before it launches any run, and the disk the study will need.

Contract:
- `check_inputs(config)`: the base model (`model.name_or_path` set and its config.json readable) and
  the data every run reads — the shards of each source (complete, made with this tokenizer, files
  unchanged) and the mixture plan at both ends of the ALMR range (the epoch limit binds at one of
  them) — by the very functions `almr cpt` starts with (`train.model.model_path`,
  `stages.cpt.plan_for`). The error is the one `almr cpt` would give, prefixed with what the sweep
  checked; without this every run failed the same way and the study recorded them all as failed.
- `parameter_count(model)`: parameters of the base model, from its safetensors headers (no weights
  read), else its config.json built on the meta device.
- `disk_needed(config, parameters)` → `DiskNeed`: checkpoints are `TRAINING_STATE_B` bytes a parameter
  of training state (fp32 weights and Adam's two moments: 4 + 8) plus `export_bytes(config)` of
  Hugging Face export (2 in bf16/fp16, 4 in fp32: `cpt.export.dtype`); a run holds
  `cpt.checkpoint.keep_last` of them while it trains with periodic checkpoints, else one; after it
  ends `sweep.keep` decides what stays (`almr.sweep.keep`). `peak`: every run's leftovers plus
  `sweep.parallel` runs in flight; `end`: what the study keeps.
"""

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from almr.config import AlmrConfig
from almr.errors import AlmrError, ConfigError
from almr.sweep import design

TRAINING_STATE_B = 12  # fp32 master weights + Adam exp_avg + exp_avg_sq, bytes per parameter


def export_bytes(config: AlmrConfig) -> int:
    """Bytes a parameter of the Hugging Face export: `cpt.export.dtype`, whose `auto` is bf16 for a
    run trained under bf16 autocast (model.dtype bfloat16) and counted as fp32 otherwise (the base
    model's own dtype, which `auto` may also pick, is not read here: the larger estimate)."""
    dtype = config.cpt.export.dtype
    if dtype == "auto":
        dtype = "bfloat16" if config.model.dtype == "bfloat16" else "float32"
    return 4 if dtype == "float32" else 2


def check_inputs(config: AlmrConfig) -> None:
    """Refuse a study whose runs would all fail at their start (module docstring)."""
    from transformers import AutoConfig

    from almr.stages.cpt import plan_for
    from almr.train.model import model_path

    path = model_path(config.model)
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.name_or_path={path}: no model config there ({str(err).splitlines()[0]}); point it at a "
            "Hugging Face model directory — checked once before the study, so that no run starts"
        ) from None
    sweep = config.sweep
    for almr in sorted({sweep.almr.low, sweep.almr.high}):
        point = design.point_config(config, almr, sweep.lr.low, str(Path(sweep.sweep_dir) / "runs" / "check"))
        try:
            plan_for(point)
        except AlmrError as err:
            raise type(err)(f"the study's runs cannot read their data (checked at ALMR {almr:g}): {err}") from None


def parameter_count(model: str) -> int:
    """Parameters of the model at `model` (module docstring)."""
    files = sorted(Path(model).glob("*.safetensors"))
    if files:
        total = 0
        for path in files:
            with path.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
            total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
        return total
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return sum(p.numel() for p in built.parameters())


@dataclass(frozen=True)
class DiskNeed:
    parameters: int
    runs: int
    parallel: int
    in_flight_b: int  # one run while it trains
    kept_b: int  # one ended run, after sweep.keep
    best_b: int  # the exports sweep.keep.exports=best keeps, in all

    @property
    def end(self) -> int:
        return self.runs * self.kept_b + self.best_b

    @property
    def peak(self) -> int:
        return self.end + self.parallel * max(0, self.in_flight_b - self.kept_b)

    def describe(self) -> str:
        return (
            f"disk: ~{_size(self.peak)} at most while the study runs, ~{_size(self.end)} kept at its end "
            f"({self.runs} runs of a {_count(self.parameters)}-parameter model; {self.parallel} in flight hold "
            f"{_size(self.in_flight_b)} each, an ended run keeps {_size(self.kept_b)}"
            + (f", the best runs' exports {_size(self.best_b)}" if self.best_b else "")
            + "; sweep.keep sets what stays)"
        )


def _size(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if b < 1000 or unit == "PB":
            return f"{b:.3g} {unit}" if unit != "B" else f"{int(b)} B"
        b /= 1000
    raise AssertionError


def disk_needed(config: AlmrConfig, parameters: int) -> DiskNeed:
    """The disk the study's checkpoints take (module docstring)."""
    sweep, ckpt = config.sweep, config.cpt.checkpoint
    held = ckpt.keep_last if ckpt.every_steps else 1  # complete checkpoints a run holds while it trains
    writing = 1 if ckpt.every_steps else 0  # the next one being written beside them
    export = export_bytes(config)
    per_checkpoint = (TRAINING_STATE_B + export) * parameters
    in_flight = (held + writing) * per_checkpoint
    keep = sweep.keep
    kept = held * TRAINING_STATE_B * parameters if keep.training_state else 0
    if keep.exports == "all":
        kept += (held if keep.training_state else 1) * export * parameters
    runs = design.total_runs(sweep)
    best = min(keep.best, runs) * export * parameters if keep.exports == "best" else 0
    return DiskNeed(parameters, runs, min(sweep.parallel, runs), in_flight, kept, best)


def _count(parameters: int) -> str:
    """8.03B, 1.05M: the unit a reader expects for the size."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if parameters >= scale:
            return f"{parameters / scale:.3g}{unit}"
    return str(parameters)
