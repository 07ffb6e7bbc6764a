"""Synthetic response surfaces with a known optimum, and fake CPT runs on them.

A test fixture (tests/sweep/test_sweep_*.py, tests/frontier/test_frontier_cli.py) that benchmarks/bench_sweep.py
uses too: no training, the same driver, study and records.

`Surface.random(seed)` draws one instance of a family of smooth surfaces over (ALMR ∈ [0, 1],
x = log10 LR ∈ [−5, −2]): the averaged metric is a baseline plus a Gaussian bump around a ridge
x*(ALMR) = a + b·ALMR (the paper's frontier: the best LR moves with the ALMR),

    f(ALMR, x) = base + tilt·ALMR + height · exp(−½ [((x − x*(ALMR)) / w)² + ((ALMR − p) / s)²])

with a, b, the ridge width w, the peak position p along it, its spread s, the height and the tilt
drawn from the seed (ranges in `random`). The optimum is found numerically on a fine grid
(`optimum`). An observation adds Gaussian noise (σ `noise`, 0.3 points by default).

`fake_run(surface, ...)` is a `FunctionLauncher` run function: it writes a run folder like
`almr cpt` (start, val at step 0, probe events every `probe_every` tokens whose averaged metric
rises from the base value toward the point's final value as 1 − exp(−k·t) with noise, end) and
asks `should_stop()` after each probe, returning early when told.
"""

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from almr.sweep.launch import RunSpec

LOG_LR = (-5.0, -2.0)
KEYS = ("world_mmlu", "world_ceval")  # the fake probe's tasks; both carry the averaged value


@dataclass(frozen=True)
class Surface:
    a: float
    b: float
    width: float
    peak: float
    spread: float
    height: float
    tilt: float
    base: float = 40.0
    noise: float = 0.3

    @classmethod
    def random(cls, seed: int, noise: float = 0.3) -> "Surface":
        rng = np.random.default_rng(seed)
        while True:
            a, b = rng.uniform(-4.6, -2.8), rng.uniform(-1.2, 0.6)
            if LOG_LR[0] + 0.3 <= a + b <= LOG_LR[1] - 0.3:  # the ridge stays inside the square
                break
        return cls(
            a=float(a), b=float(b), width=float(rng.uniform(0.25, 0.7)), peak=float(rng.uniform(0.1, 0.9)),
            spread=float(rng.uniform(0.2, 0.6)), height=float(rng.uniform(8.0, 20.0)),
            tilt=float(rng.uniform(-3.0, 3.0)), noise=noise,
        )  # fmt: skip

    def value(self, almr: float | np.ndarray, lr: float | np.ndarray) -> float | np.ndarray:
        x = np.log10(lr)
        ridge = self.a + self.b * almr
        q = ((x - ridge) / self.width) ** 2 + ((almr - self.peak) / self.spread) ** 2
        return self.base + self.tilt * almr + self.height * np.exp(-0.5 * q)

    def optimum(self, n: int = 801) -> tuple[float, float, float]:
        """(value, ALMR, LR) of the true maximum, on an n × n grid over the square."""
        almr, x = np.meshgrid(np.linspace(0, 1, n), np.linspace(*LOG_LR, n), indexing="ij")
        values = self.value(almr, 10**x)
        i = np.unravel_index(np.argmax(values), values.shape)
        return float(values[i]), float(almr[i]), float(10 ** x[i])


def fake_run(
    surface: Surface,
    total_tokens: int = 100_000,
    probe_every: int = 10_000,
    rate: float = 3.0,
    seed: int = 0,
    fail: Callable[[float, float], bool] | None = None,
) -> Callable[[RunSpec, Callable[[], bool]], None]:
    """A run function drawing from `surface` (see the module doc); `fail(almr, lr)` True raises."""

    def run(spec: RunSpec, should_stop: Callable[[], bool]) -> None:
        rng = np.random.default_rng([seed, int(spec.almr * 1e6), int(-math.log10(spec.lr) * 1e6)])
        final = float(surface.value(spec.almr, spec.lr)) + rng.normal(0, surface.noise)
        start = surface.base
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        with (spec.run_dir / "metrics.jsonl").open("w", encoding="utf-8") as out:

            def write(event: str, **fields: object) -> None:
                out.write(json.dumps({"event": event, **fields}) + "\n")
                out.flush()

            write("start", step=0, tokens=0, steps=total_tokens // probe_every)
            write("val", step=0, tokens=0, loss={"en": 2.0, "zh": 4.0})
            if fail is not None and fail(spec.almr, spec.lr):
                raise RuntimeError(f"synthetic failure at ALMR {spec.almr}, LR {spec.lr}")
            for step, tokens in enumerate(range(probe_every, total_tokens + 1, probe_every), start=1):
                t = tokens / total_tokens
                rise = (1 - math.exp(-rate * t)) / (1 - math.exp(-rate))
                value = start + (final - start) * rise + (rng.normal(0, surface.noise) if t < 1 else 0.0)
                write("train", step=step, tokens=tokens, loss=4.0 - t)
                write("probe", step=step, tokens=tokens, scores=dict.fromkeys(KEYS, value))
                if t < 1 and should_stop():
                    return
            zh = 4.0 - 2.0 * spec.almr * min(1.0, spec.lr / 1e-3)
            write("val", step=step, tokens=tokens, loss={"en": 2.0 + spec.almr / 2, "zh": zh})
            write("end", step=step, tokens=tokens)

    return run
