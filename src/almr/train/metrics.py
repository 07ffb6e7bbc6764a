"""Training measurements: the metrics.jsonl writer, model FLOPs per token and the hardware peak
that model FLOPs utilization (MFU) is measured against. The event schema is in docs/training.md."""

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from almr.errors import ConfigError

# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), FLOP/s per GPU.
_CUDA_BF16_PEAKS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12 and is matched first below
    "H100 PCIE": 756e12,
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
}


def model_flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: 6·N for the matmuls of forward and backward, N the parameters that
    take part in a matmul (the input embedding is a lookup and is left out; a tied output head is a
    matmul and is counted), plus 12·L·d·T for attention scores and values (PaLM, appendix B)."""
    config = model.config
    params = {id(p): p for p in model.parameters()}
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding
    matmul_params = sum(p.numel() for key, p in params.items() if tied or key != id(embedding))
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 6.0 * matmul_params + 12.0 * layers * heads * head_dim * seq_len


@functools.cache
def peak_flops(device_type: str, dtype_name: str) -> tuple[float, str]:
    """The peak FLOP/s of one device and how it was found. CPUs have no reliable table, so the peak
    is measured once per process with a large matmul; known GPUs come from their data sheets."""
    if device_type == "cuda":
        name = torch.cuda.get_device_name().upper()
        if dtype_name == "bfloat16":
            for key in sorted(_CUDA_BF16_PEAKS, key=len, reverse=True):
                if key in name:
                    return _CUDA_BF16_PEAKS[key], f"data sheet, {key} bf16 dense"
        return _measure_matmul_peak(torch.device("cuda"), getattr(torch, dtype_name)), f"measured {dtype_name} matmul"
    return _measure_matmul_peak(torch.device("cpu"), getattr(torch, dtype_name)), f"measured {dtype_name} matmul"


def _measure_matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    # Best of several timings: the peak is what the hardware can do, not what a noisy moment gave.
    size = 1024 if device.type == "cpu" else 8192
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = math.inf
    for _ in range(8):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / 4)
    return 2.0 * size**3 / best


class MetricsLog:
    """Appends one JSON object per event to metrics.jsonl (and, optionally, TensorBoard scalars).
    Every line is flushed so that a killed run keeps its log. With no path it writes nothing:
    the log of the processes other than the main one."""

    def __init__(self, path: Path | None, tensorboard: bool = False) -> None:
        self.path = path
        self._file: Any = None
        self._tb: Any = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "cpt.tensorboard=true needs the tensorboard package; pip install tensorboard, "
                    "or set cpt.tensorboard=false"
                ) from None
            self._tb = SummaryWriter(str(path.parent / "tensorboard"))

    def write(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        if self._tb is not None and "step" in fields:
            for key, value in _scalars(fields):
                self._tb.add_scalar(f"{event}/{key}", value, fields["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def training_bar(stage: str, steps: int, done: int, **extra: str) -> Progress:
    """The live bar every trainer shows: steps done of `steps`, tokens/s, loss, any `extra` fields
    (name → label, e.g. acc="reward acc"), elapsed time and ETA; started. Update the fields `tps`,
    `loss` and each extra name."""
    extras = [TextColumn(f"{label} {{task.fields[{name}]}}", markup=False) for name, label in extra.items()]
    bar = Progress(
        TextColumn(stage, style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[tps]} tok/s", markup=False), TextColumn("loss {task.fields[loss]}", markup=False),
        *extras, TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    bar.add_task(stage.lower(), total=steps, completed=done, tps="-", loss="-", **dict.fromkeys(extra, "-"))
    bar.start()
    return bar


def truncate_after(path: Path, step: int) -> None:
    """Drop the events a killed run logged after `step` (the checkpoint a resume starts from),
    so that metrics.jsonl holds one trajectory. Rewritten through a temporary file and a rename."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if record.get("step") is None or record["step"] <= step:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


def logged_steps(path: Path, event: str) -> set[int]:
    """The steps at which metrics.jsonl records `event` (lines cut short by a kill are skipped)."""
    if not path.exists():
        return set()
    steps = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == event and record.get("step") is not None:
            steps.add(int(record["step"]))
    return steps


def _scalars(fields: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    out = []
    for key, value in fields.items():
        if isinstance(value, bool) or key in ("step", "time"):
            continue
        if isinstance(value, int | float):
            out.append((prefix + key, float(value)))
        elif isinstance(value, dict):
            out.extend(_scalars(value, prefix + key + "/"))
    return out
