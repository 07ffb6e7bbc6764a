"""Sweep efficiency on synthetic response surfaces with a known optimum (docs/benchmarks.md, Sweep).

For each of `--instances` random surfaces (`Surface.random(seed)` of tests/fake_runs.py: a Gaussian
bump on a ridge log10 LR* = a + b·ALMR over ALMR ∈ [0, 1], log10 LR ∈ [−5, −2], noise σ 0.3
points; seeds 1000, 1001, …, nothing tuned to them) this runs, through `almr.sweep.study.run_sweep`
with an in-process `FunctionLauncher` (fake runs: no training; same Optuna study, SQLite storage,
records):

- the 7×7 grid (49 runs);
- the adaptive design (8 Sobol runs, then GPSampler; `--parallel` runs in flight; the in-process
  launcher runs them one after another, so proposals come in batches of that size), without and
  with early stopping (PercentilePruner, `--percentile` 50: the median rule, after 4 completed
  runs, from `--min-fraction` of a run's tokens; fake trajectories rise toward each point's final
  value as 1 − exp(−3t), with noise, probed every 10% of the budget).

- and what a user would otherwise pick, as plain Optuna studies (`study.optimize`, one trial at a
  time, in-memory storage) on the same surfaces, budget (`--max-runs`) and trajectories (`trajectory`:
  the values `fake_run` writes, the same seeded noise): random search (`RandomSampler`), TPE
  (`TPESampler`), successive halving (`RandomSampler` + `SuccessiveHalvingPruner`, rungs at 10%,
  30%, 90% of a run's tokens: reduction factor 3) and Hyperband (`TPESampler` + `HyperbandPruner`,
  min resource 10%, max 100%, reduction factor 3), all seeded by the instance's seed. A pruned trial is
  PRUNED (never a recommendation) and counts the tokens it trained.

The recommendation is the best *observed* run (highest noisy averaged metric among completed
runs); it "comes within 0.5" when its TRUE value is ≥ f* − 0.5. Runs needed = the position (in
launch order) of the first run after which that holds; an adaptive sweep stops when the batch in
flight has ended, or at `--max-runs` (then counts as not reached: median over instances with
reached=inf). Tokens = all tokens the sweep trained until it stopped (pruned runs' partial tokens).

Runs and tokens to target are counted over the runs launched up to the one after which the target
holds (all designs alike; the summary gives median and range over instances, where a miss is inf).

    python benchmarks/bench_sweep.py --instances 30 [--parallel 4] [--percentile 50] [--json out.json]
"""

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from almr.config import AlmrConfig
from almr.sweep.launch import FunctionLauncher
from almr.sweep.records import RunRecord
from almr.sweep.study import run_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake runs are a test fixture
from fake_runs import KEYS, Surface, fake_run

TOKENS = 100_000
TARGET = 0.5


def config(sweep_dir: Path, design: str, parallel: int, max_runs: int, pruning: dict, seed: int) -> AlmrConfig:
    return AlmrConfig.model_validate({
        "mixture": {"almr": 0.5},
        "cpt": {"probe": {"every_tokens": TOKENS // 10}},
        "eval": {"average": list(KEYS)},
        "sweep": {"design": design, "almr": {"low": 0.0, "high": 1.0}, "lr": {"low": 1e-5, "high": 1e-2},
                  "grid_almr": 7, "grid_lr": 7, "n_initial": 8, "max_runs": max_runs, "parallel": parallel,
                  "seed": seed, "sweep_dir": str(sweep_dir), "poll_s": 0.001,
                  "pruning": {"n_startup_runs": 4, **pruning}},
    })  # fmt: skip


def trajectory(surface: Surface, almr: float, lr: float, seed: int) -> list[float]:
    """The averaged metric at each probe (every 10% of TOKENS) of a run at (almr, lr): exactly what
    `fake_run(surface, TOKENS, TOKENS // 10, seed=seed)` writes (same seeded noise)."""
    rng = np.random.default_rng([seed, int(almr * 1e6), int(-math.log10(lr) * 1e6)])
    final = float(surface.value(almr, lr)) + rng.normal(0, surface.noise)
    values = []
    for tokens in range(TOKENS // 10, TOKENS + 1, TOKENS // 10):
        t = tokens / TOKENS
        rise = (1 - math.exp(-3.0 * t)) / (1 - math.exp(-3.0))
        values.append(surface.base + (final - surface.base) * rise + (rng.normal(0, surface.noise) if t < 1 else 0.0))
    return values


BASELINES = {  # name: (sampler, pruner) factories, seeded
    "random": (lambda seed: optuna.samplers.RandomSampler(seed=seed), lambda: optuna.pruners.NopPruner()),
    "tpe": (lambda seed: optuna.samplers.TPESampler(seed=seed), lambda: optuna.pruners.NopPruner()),
    "random_sha": (lambda seed: optuna.samplers.RandomSampler(seed=seed),
                   lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=TOKENS // 10, reduction_factor=3)),
    "tpe_hyperband": (lambda seed: optuna.samplers.TPESampler(seed=seed),
                      lambda: optuna.pruners.HyperbandPruner(min_resource=TOKENS // 10, max_resource=TOKENS,
                                                             reduction_factor=3)),
}  # fmt: skip


def baseline(name: str, surface: Surface, best: float, seed: int, max_runs: int) -> dict:
    """One plain Optuna study (module docstring) until the target holds or `max_runs` trials ran."""
    sampler, pruner = BASELINES[name]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler(seed), pruner=pruner())
    tokens: list[int] = []
    top: tuple[float, float, float] | None = None  # observed value, almr, lr of the best completed trial
    started = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        almr = trial.suggest_float("almr", 0.0, 1.0)
        lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        values = trajectory(surface, almr, lr, seed)
        for i, value in enumerate(values[:-1], start=1):
            trial.report(value, i * TOKENS // 10)
            if trial.should_prune():
                tokens.append(i * TOKENS // 10)
                raise optuna.TrialPruned()
        tokens.append(TOKENS)
        return values[-1]

    def reached() -> bool:
        return top is not None and best - float(surface.value(top[1], top[2])) <= TARGET

    while len(tokens) < max_runs and not reached():
        study.optimize(objective, n_trials=1)
        last = study.trials[-1]
        if last.state == optuna.trial.TrialState.COMPLETE and (top is None or last.value > top[0]):
            top = (float(last.value), last.params["almr"], last.params["lr"])
    gap = None if top is None else best - float(surface.value(top[1], top[2]))
    return {
        "runs_to_target": len(tokens) if reached() else math.inf,
        "runs": len(tokens),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        "tokens_to_target": sum(tokens) if reached() else math.inf,
        "tokens": sum(tokens),
        "gap": gap,
        "seconds": time.perf_counter() - started,
    }


def runs_to_target(records: list[RunRecord], surface: Surface, best: float) -> float:
    """Launch position of the first run after which the best observed run is within TARGET of f*."""
    ordered = sorted(records, key=lambda r: r.run_id)  # run ids start with the trial number
    top: RunRecord | None = None
    for i, r in enumerate(ordered, start=1):
        if (
            r.status == "completed"
            and r.averaged_metric is not None
            and (top is None or r.averaged_metric > (top.averaged_metric or -math.inf))
        ):
            top = r
        if top is not None and best - float(surface.value(top.almr, top.lr)) <= TARGET:
            return i
    return math.inf


def tokens_to_target(records: list[RunRecord], runs: float) -> float:
    """Tokens trained by the runs launched up to position `runs` (inf when the target was never held)."""
    if runs == math.inf:
        return math.inf
    return float(sum(r.tokens for r in sorted(records, key=lambda r: r.run_id)[: int(runs)]))


def one(seed: int, parallel: int, max_runs: int, root: Path, pruner: dict, with_grid: bool = True) -> dict:
    surface = Surface.random(seed)
    best = surface.optimum()[0]
    out: dict = {"seed": seed, "optimum": best}
    for name in BASELINES:
        out[name] = baseline(name, surface, best, seed, max_runs)
    for name, design, pruning in (("grid", "grid", False), ("adaptive", "adaptive", False),
                                  ("adaptive_es", "adaptive", True)):  # fmt: skip
        if name == "grid" and not with_grid:
            continue
        started = time.perf_counter()

        def stop(records: list[RunRecord], design: str = design) -> bool:
            return design == "adaptive" and runs_to_target(records, surface, best) < math.inf

        result = run_sweep(
            config(root / f"{seed}-{name}", design, parallel, max_runs, {**pruner, "enabled": pruning}, seed),
            FunctionLauncher(fake_run(surface, TOKENS, TOKENS // 10, seed=seed)),
            on_finish=stop,
        )
        rec = result.best
        reach = runs_to_target(result.records, surface, best)
        out[name] = {
            "runs_to_target": reach,
            "tokens_to_target": tokens_to_target(result.records, reach),
            "runs": len(result.records),
            "pruned": sum(r.status == "pruned" for r in result.records),
            "tokens": sum(r.tokens for r in result.records),
            "gap": None if rec is None else best - float(surface.value(rec.almr, rec.lr)),
            "seconds": time.perf_counter() - started,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-runs", type=int, default=48)
    parser.add_argument("--percentile", type=float, default=50.0, help="early stopping keeps the top P%% (50: median)")
    parser.add_argument("--min-fraction", type=float, default=0.0, help="early stopping: not before this run share")
    parser.add_argument("--no-grid", action="store_true", help="skip the 7x7 grid (half the time; its rows stay)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pruner = {"percentile": args.percentile, "min_tokens": int(args.min_fraction * TOKENS)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1000, 1000 + args.instances):
            row = one(seed, args.parallel, args.max_runs, Path(tmp), pruner, with_grid=not args.no_grid)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items()}, default=str), flush=True)
    grid_runs, grid_tokens = 49, 49 * TOKENS

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in rows)

    summary = {
        "instances": len(rows),
        "parallel": args.parallel,
        "pruner": pruner,
        "grid_reached": sum(r["grid"]["runs_to_target"] < math.inf for r in rows) if not args.no_grid else None,
        "grid_median_gap": med("grid", "gap") if not args.no_grid else None,
        "adaptive_reached": sum(r["adaptive"]["runs_to_target"] < math.inf for r in rows),
        "adaptive_median_runs": med("adaptive", "runs_to_target"),
        "adaptive_median_runs_launched": med("adaptive", "runs"),
        "adaptive_es_reached": sum(r["adaptive_es"]["runs_to_target"] < math.inf for r in rows),
        "adaptive_es_median_runs": med("adaptive_es", "runs_to_target"),
        "adaptive_median_tokens": med("adaptive", "tokens"),
        "adaptive_es_median_tokens": med("adaptive_es", "tokens"),
    }
    for name in ("adaptive", "adaptive_es", *BASELINES, *([] if args.no_grid else ["grid"])):
        runs = [r[name]["runs_to_target"] for r in rows]
        toks = [r[name]["tokens_to_target"] for r in rows]
        summary[f"{name}_to_target"] = {
            "reached": sum(x < math.inf for x in runs),
            "runs_median": statistics.median(runs), "runs_range": [min(runs), max(runs)],
            "tokens_median": statistics.median(toks), "tokens_range": [min(toks), max(toks)],
        }  # fmt: skip
    summary["runs_ratio_vs_grid"] = summary["adaptive_median_runs"] / grid_runs
    summary["tokens_ratio_es_vs_grid"] = summary["adaptive_es_median_tokens"] / grid_tokens
    summary["tokens_ratio_no_es_vs_grid"] = summary["adaptive_median_tokens"] / grid_tokens
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
