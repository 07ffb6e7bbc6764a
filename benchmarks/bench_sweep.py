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

The recommendation is the best *observed* run (highest noisy averaged metric among completed
runs); it "comes within 0.5" when its TRUE value is ≥ f* − 0.5. Runs needed = the position (in
launch order) of the first run after which that holds; an adaptive sweep stops when the batch in
flight has ended, or at `--max-runs` (then counts as not reached: median over instances with
reached=inf). Tokens = all tokens the sweep trained until it stopped (pruned runs' partial tokens).

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


def runs_to_target(records: list[RunRecord], surface: Surface, best: float) -> float:
    """Launch position of the first run after which the best observed run is within TARGET of f*."""
    ordered = sorted(records, key=lambda r: r.run_id)  # run ids start with the trial number
    top: RunRecord | None = None
    for i, r in enumerate(ordered, start=1):
        if r.status == "completed" and r.averaged_metric is not None and (
            top is None or r.averaged_metric > (top.averaged_metric or -math.inf)
        ):
            top = r
        if top is not None and best - float(surface.value(top.almr, top.lr)) <= TARGET:
            return i
    return math.inf


def one(seed: int, parallel: int, max_runs: int, root: Path, pruner: dict) -> dict:
    surface = Surface.random(seed)
    best = surface.optimum()[0]
    out: dict = {"seed": seed, "optimum": best}
    for name, design, pruning in (("grid", "grid", False), ("adaptive", "adaptive", False),
                                  ("adaptive_es", "adaptive", True)):  # fmt: skip
        started = time.perf_counter()

        def stop(records: list[RunRecord], design: str = design) -> bool:
            return design == "adaptive" and runs_to_target(records, surface, best) < math.inf

        result = run_sweep(
            config(root / f"{seed}-{name}", design, parallel, max_runs, {**pruner, "enabled": pruning}, seed),
            FunctionLauncher(fake_run(surface, TOKENS, TOKENS // 10, seed=seed)),
            on_finish=stop,
        )
        rec = result.best
        out[name] = {
            "runs_to_target": runs_to_target(result.records, surface, best),
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
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pruner = {"percentile": args.percentile, "min_tokens": int(args.min_fraction * TOKENS)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1000, 1000 + args.instances):
            row = one(seed, args.parallel, args.max_runs, Path(tmp), pruner)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items()}, default=str), flush=True)
    grid_runs, grid_tokens = 49, 49 * TOKENS

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in rows)

    summary = {
        "instances": len(rows),
        "parallel": args.parallel,
        "pruner": pruner,
        "grid_reached": sum(r["grid"]["runs_to_target"] < math.inf for r in rows),
        "grid_median_gap": med("grid", "gap"),
        "adaptive_reached": sum(r["adaptive"]["runs_to_target"] < math.inf for r in rows),
        "adaptive_median_runs": med("adaptive", "runs_to_target"),
        "adaptive_median_runs_launched": med("adaptive", "runs"),
        "adaptive_es_reached": sum(r["adaptive_es"]["runs_to_target"] < math.inf for r in rows),
        "adaptive_es_median_runs": med("adaptive_es", "runs_to_target"),
        "adaptive_median_tokens": med("adaptive", "tokens"),
        "adaptive_es_median_tokens": med("adaptive_es", "tokens"),
    }
    summary["runs_ratio_vs_grid"] = summary["adaptive_median_runs"] / grid_runs
    summary["tokens_ratio_es_vs_grid"] = summary["adaptive_es_median_tokens"] / grid_tokens
    summary["tokens_ratio_no_es_vs_grid"] = summary["adaptive_median_tokens"] / grid_tokens
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
