"""The adaptive design against the full grid on the demo world: real CPT runs (docs/benchmarks.md).

From the demo world's base model (built and pretrained into `--out` unless already there), with
the `demo` preset's runs (64 steps of 16 × 256 tokens unless `--tokens`), over ALMR ∈ [0.05, 0.95]
and LR ∈ [1e-4, 1e-2] (log):

1. the 7×7 grid (49 runs): its best run, and its frontier analysis (`analyze_sweep`);
2. the adaptive design (`--n-initial` Sobol runs, then GPSampler, `--max-runs` runs in all), and
   its frontier analysis's recommendation;
3. the score of each design's recommended point on the grid's GP surface (49 runs: the best
   estimate of the truth there is), the distance between the two picks, and one confirmation run
   at each recommendation (the measured averaged metric).

Runs, tokens and wall time are printed for each design; `--json` keeps everything. Reruns reuse
the finished runs (the sweeps resume).

    python benchmarks/bench_sweep_demo.py --out /tmp/almr-sweep-bench --tokens 131072 --threads 1 --parallel 2
"""

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from almr.config import AlmrConfig, dump_config, load_config
from almr.frontier.analyze import Analysis, analyze_sweep
from almr.pipeline import study_config
from almr.stages.base_model import pretrain_base
from almr.sweep.design import point_config
from almr.sweep.launch import LocalLauncher, RunSpec
from almr.sweep.records import RunRecord, fill_from_metrics, load_records
from almr.sweep.study import probe_base_model, run_sweep
from almr.world.build import build_world


def sweep_config(study: AlmrConfig, sweep_dir: Path, args: argparse.Namespace, design: str) -> AlmrConfig:
    raw = study.model_dump(mode="json")
    raw["cpt"]["total_tokens"] = args.tokens
    raw["cpt"]["probe"]["every_tokens"] = args.tokens // 4
    raw["sweep"] = {
        "design": design, "almr": {"low": 0.05, "high": 0.95}, "lr": {"low": 1e-4, "high": 1e-2},
        "grid_almr": 7, "grid_lr": 7, "n_initial": args.n_initial, "max_runs": args.max_runs,
        "parallel": args.parallel, "threads_per_run": args.threads, "seed": args.seed,
        "sweep_dir": str(sweep_dir), "poll_s": 0.5,
    }  # fmt: skip
    return AlmrConfig.model_validate(raw)


def summarize(name: str, records: list[RunRecord], analysis: Analysis, seconds: float) -> dict[str, Any]:
    done = [r for r in records if r.status == "completed" and r.averaged_metric is not None]
    best = max(done, key=lambda r: r.averaged_metric or -math.inf)
    rec = analysis.summary["recommendation"]
    return {
        "design": name,
        "runs": len(records),
        "completed": len(done),
        "tokens": sum(r.tokens for r in records),
        "run_wall_s": sum(r.wall_time_s for r in records),
        "sweep_wall_s": seconds,
        "best_run": {"almr": best.almr, "lr": best.lr, "metric": best.averaged_metric},
        "recommendation": {"almr": rec["almr"], "lr": rec["lr"], "metric": rec["metric"]["mean"],
                           "std": rec["metric"]["std"], "p_best": rec["prob_best_within_radius"]},
    }  # fmt: skip


def confirm(study: AlmrConfig, out: Path, name: str, almr: float, lr: float, args: argparse.Namespace) -> float | None:
    """One CPT run at (almr, lr) with the sweep's settings: its final averaged metric."""
    run_dir = (out / "confirm" / f"{name}-almr{almr:.4f}-lr{lr:.3e}").resolve()  # a rerun reuses only the same point
    run_dir.mkdir(parents=True, exist_ok=True)
    point = point_config(sweep_config(study, out / "grid", args, "grid"), almr, lr, str(run_dir))
    record = fill_from_metrics(RunRecord(run_id=name, almr=almr, lr=lr), run_dir, point.eval.average)
    if record.averaged_metric is None:
        (run_dir / "config.yaml").write_text(dump_config(point), encoding="utf-8")
        launcher = LocalLauncher()
        handle = launcher.start(RunSpec(name, almr, lr, run_dir, point, threads=args.threads))
        while (exit_ := launcher.poll(handle)) is None:
            time.sleep(0.5)
        if not exit_.ok:
            raise SystemExit(f"confirmation run {name} failed: {exit_.error}")
        record = fill_from_metrics(RunRecord(run_id=name, almr=almr, lr=lr), run_dir, point.eval.average)
    return record.averaged_metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/almr-sweep-bench"))
    parser.add_argument("--tokens", type=int, default=262_144)
    parser.add_argument("--max-runs", type=int, default=16)
    parser.add_argument("--n-initial", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    config = load_config("demo")
    out = args.out
    world = out / "world"
    build_world(world, config.world)
    base = pretrain_base(world, out / "base-run", out / "shards", config)
    study = study_config(world, base, out, config)

    results: dict[str, Any] = {"tokens_per_run": args.tokens}
    analyses: dict[str, Analysis] = {}
    for name in ("grid", "adaptive"):
        cfg = sweep_config(study, out / name, args, name)
        started = time.perf_counter()
        run_sweep(cfg, baseline_scores=probe_base_model, log=lambda m, name=name: print(f"[{name}] {m}", flush=True))
        seconds = time.perf_counter() - started
        analyses[name] = analyze_sweep(out / name, config.frontier, out / name / "frontier")
        results[name] = summarize(name, load_records(out / name), analyses[name], seconds)
        print(json.dumps(results[name]), flush=True)

    truth = analyses["grid"].recommender.metric_surface_
    grid_max = results["grid"]["recommendation"]["metric"]
    for name in ("grid", "adaptive"):
        rec = results[name]["recommendation"]
        on_grid = float(truth.predict([rec["almr"]], [rec["lr"]])[0])
        results[name]["on_grid_surface"] = on_grid
        results[name]["gap_on_grid_surface"] = grid_max - on_grid
        results[name]["confirmed"] = confirm(study, out, name, rec["almr"], rec["lr"], args)
    a, g = results["adaptive"]["recommendation"], results["grid"]["recommendation"]
    results["distance"] = {"almr": abs(a["almr"] - g["almr"]), "log10_lr": abs(math.log10(a["lr"] / g["lr"]))}
    results["runs_ratio"] = results["adaptive"]["runs"] / results["grid"]["runs"]
    results["tokens_ratio"] = results["adaptive"]["tokens"] / results["grid"]["tokens"]
    print(json.dumps({k: results[k] for k in ("distance", "runs_ratio", "tokens_ratio")}))
    for name in ("grid", "adaptive"):
        r = results[name]
        rec = r["recommendation"]
        print(
            f"{name:9s} runs {r['runs']:3d} tokens {r['tokens'] / 1e6:6.2f}M  pick ALMR {rec['almr']:.3f} "
            f"LR {rec['lr']:.2e}  predicted {rec['metric']:.2f}  on grid surface {r['on_grid_surface']:.2f} "
            f"(gap {r['gap_on_grid_surface']:.2f})  confirmed {r['confirmed']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
