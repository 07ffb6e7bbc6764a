"""The study's design as data: points, overrides, identity of the base config, Optuna parts.

Contract:
- `grid_points(sweep)` enumerates the grid exactly: `sweep.almr.values` (or `grid_almr` evenly
  spaced values over [low, high]) × `sweep.lr.values` (or `grid_lr` values evenly spaced in log10 LR
  when `lr_log`, else linearly), ALMR-major, each value rounded to 12 significant digits so that the
  same spec always gives the same floats. `total_runs(sweep)`: the runs a study starts in all (the
  grid's points, or `sweep.max_runs`).
- `point_config(config, almr, lr, run_dir)` is the base config with exactly three keys changed —
  `mixture.almr`, `cpt.optimizer.lr`, `cpt.run_dir` — and the `sweep` section reset to its defaults
  (a run does not depend on how the study is organized, so a resumed run's checkpoint config still
  matches after `sweep.parallel` or `sweep.max_runs` change). It is validated whole.
- `base_hash(config)` is the sha256 of the resolved config minus the swept keys, `cpt.run_dir` and
  the `sweep` section: two sweeps with the same hash differ only in where and how they were run.
- `distributions`, `make_sampler`, `make_pruner`: the Optuna search space (ALMR uniform, LR
  log-uniform), the samplers (grid: enqueued points; adaptive: `GPSampler`) and the pruner
  (`PercentilePruner`, or none).
- `initial_point(sweep, index)`: the adaptive design's space-filling points, a function of the index
  alone — point `index` of the scrambled Sobol sequence seeded by `sweep.seed`, mapped into the
  ranges (LR on a log scale). The driver enqueues point k as the study's k-th trial while fewer than
  `n_initial` runs have completed. Nothing about them lives in a sampler's memory: a resumed driver
  (a new process) continues the sequence where the study is, and never repeats a point (the bug of
  issue #18: GPSampler's startup points came from a seeded RandomSampler that restarted with every
  driver, so a resumed study proposed its first points again).
"""

import hashlib
import json
import math
import warnings
from typing import Any

import numpy as np
import optuna

from almr.config import AlmrConfig
from almr.sweep.config import SweepConfig

SWEPT_KEYS = ("mixture.almr", "cpt.optimizer.lr", "cpt.run_dir")


def _round(x: float) -> float:
    return float(f"{x:.12g}")


def axis_values(sweep: SweepConfig, axis: str) -> list[float]:
    """The grid's values on one axis (ascending, exact)."""
    rng = sweep.almr if axis == "almr" else sweep.lr
    if rng.values is not None:
        return sorted(_round(v) for v in rng.values)
    n = sweep.grid_almr if axis == "almr" else sweep.grid_lr
    if axis == "lr" and sweep.lr_log:
        return [_round(10**e) for e in np.linspace(math.log10(rng.low), math.log10(rng.high), n)]
    return [_round(v) for v in np.linspace(rng.low, rng.high, n)]


def grid_points(sweep: SweepConfig) -> list[tuple[float, float]]:
    """Every (ALMR, LR) of the grid design, ALMR-major."""
    return [(a, lr) for a in axis_values(sweep, "almr") for lr in axis_values(sweep, "lr")]


def total_runs(sweep: SweepConfig) -> int:
    """The runs the study starts in all: every grid point, or `max_runs` of an adaptive design."""
    return len(grid_points(sweep)) if sweep.design == "grid" else sweep.max_runs


def run_id(number: int, almr: float, lr: float) -> str:
    """A run's folder name: the study's trial number first (sorts in launch order), then the point."""
    return f"r{number:03d}-almr{almr:.4f}-lr{lr:.3e}"


def point_config(config: AlmrConfig, almr: float, lr: float, run_dir: str) -> AlmrConfig:
    """The run's whole config (it is written to the run's folder): see the module docstring."""
    raw = config.model_dump(mode="json")
    raw["mixture"]["almr"] = almr
    raw["cpt"]["optimizer"]["lr"] = lr
    raw["cpt"]["run_dir"] = run_dir
    raw["sweep"] = SweepConfig().model_dump(mode="json")
    return AlmrConfig.model_validate(raw)


def base_hash(config: AlmrConfig) -> str:
    """The identity of the base config (see the module docstring): it reads every section."""
    raw: dict[str, Any] = config.model_dump(mode="json")
    raw.pop("sweep", None)
    for key in SWEPT_KEYS:
        *path, leaf = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()


def distributions(sweep: SweepConfig) -> dict[str, optuna.distributions.BaseDistribution]:
    return {
        "almr": optuna.distributions.FloatDistribution(sweep.almr.low, sweep.almr.high),
        "lr": optuna.distributions.FloatDistribution(sweep.lr.low, sweep.lr.high, log=sweep.lr_log),
    }


def initial_point(sweep: SweepConfig, index: int) -> dict[str, float]:
    """Point `index` (0, 1, ...) of the adaptive design's scrambled Sobol sequence (module docstring)."""
    from scipy.stats import qmc

    with warnings.catch_warnings():  # a Sobol prefix whose length is not a power of 2 loses balance: expected
        warnings.simplefilter("ignore", UserWarning)
        engine = qmc.Sobol(2, scramble=True, seed=sweep.seed)
        if index:
            engine.fast_forward(index)
        u_almr, u_lr = engine.random(1)[0]
    almr = sweep.almr.low + float(u_almr) * (sweep.almr.high - sweep.almr.low)
    if sweep.lr_log:
        lo, hi = math.log(sweep.lr.low), math.log(sweep.lr.high)
        lr = math.exp(lo + float(u_lr) * (hi - lo))
    else:
        lr = sweep.lr.low + float(u_lr) * (sweep.lr.high - sweep.lr.low)
    return {"almr": min(max(_round(almr), sweep.almr.low), sweep.almr.high),
            "lr": min(max(_round(lr), sweep.lr.low), sweep.lr.high)}  # fmt: skip


def make_sampler(sweep: SweepConfig, asked: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; `asked` (the trials the study holds) seeds the GP's acquisition optimizer, so a
    proposal depends on the study's history only, not on which driver process asks (docs/sweep.md, Resume)."""
    # The adaptive design's first points are enqueued Sobol points (initial_point); the GP then proposes
    # by expected improvement, conditioning on still-running points so a batch spreads out.
    with warnings.catch_warnings():  # QMCSampler is marked experimental; its Sobol design is what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sobol = optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=sweep.seed, warn_independent_sampling=False
        )
    if sweep.design == "grid":
        return sobol  # never consulted: every grid point is enqueued with fixed parameters
    return optuna.samplers.GPSampler(
        seed=sweep.seed * 1_000_003 + asked, n_startup_trials=sweep.n_initial, independent_sampler=sobol,
        warn_independent_sampling=False,
    )  # fmt: skip


def make_pruner(sweep: SweepConfig) -> optuna.pruners.BasePruner:
    p = sweep.pruning
    if not p.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.PercentilePruner(
        p.percentile, n_startup_trials=p.n_startup_runs, n_warmup_steps=p.min_tokens, interval_steps=1
    )
