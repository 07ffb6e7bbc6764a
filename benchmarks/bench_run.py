"""The pipeline's wall time per stage, and the stage runner's own overhead: a rerun of a pipeline
whose every stage is done.

    python benchmarks/bench_run.py --out almr-demo                 # after `almr demo`
    python benchmarks/bench_run.py --out /tmp/p --set world.seed=7 ...   # the --set of that run

Measured, in rounds: (1) in this process, `Pipeline.states()` — every stage's fingerprint from its
config keys and its inputs' fingerprints, and each `stage.json` read — then `Pipeline.run()` over
all stages, which skips them; (2) the whole `almr run CONFIG --out OUT` command in a new process
(Python start and imports included), which is what a user waits for. Both are printed against the
sum of the skipped stages' own recorded times (`stage.json` "seconds"): what the rerun saved.
"""

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from almr.run.command import load_for_run
from almr.run.display import Display
from almr.run.runner import Pipeline
from almr.run.stages import STAGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a pipeline folder whose stages are all done")
    parser.add_argument("--config", default="demo")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config = load_for_run(args.config, args.overrides, STAGES)
    pipeline = Pipeline(STAGES, config, args.out)
    names = [s.name for s in STAGES]
    states = pipeline.states(names)
    not_done = [n for n, s in states.items() if s.state != "done"]
    if not_done:
        sys.exit(f"{args.out}: not done: {', '.join(not_done)}; run the pipeline first (same --config/--set)")
    seconds = {n: json.loads((args.out / n / "stage.json").read_text())["seconds"] for n in names}
    skipped_s = sum(seconds.values())
    command = [sys.executable, "-m", "almr.cli", "run", args.config, "--out", str(args.out),
               *(a for o in args.overrides for a in ("--set", o))]  # fmt: skip
    in_process, whole = [], []
    for _ in range(args.rounds):  # alternating: both see the same machine load
        started = time.perf_counter()
        pipeline.run(names, Display(Console(file=io.StringIO()), total=len(names), live=False))
        in_process.append(time.perf_counter() - started)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        whole.append(time.perf_counter() - started)
        assert done.stdout.count("done, skipped") == len(names), done.stdout
    print("| stage | wall time (s) |\n|---|---:|")
    for name, s in seconds.items():
        print(f"| {name} | {s:,.1f} |")
    print(f"| total | {skipped_s:,.1f} |\n")
    print(f"{len(names)} stages skipped; their recorded time: {skipped_s:,.1f} s")
    for label, times in (("fingerprint + skip, in process", in_process), ("`almr run`, new process", whole)):
        median = statistics.median(times)
        print(f"{label:<32} median {median:.3f} s (range {min(times):.3f}–{max(times):.3f}, {args.rounds} rounds)"
              f" = {100 * median / skipped_s:.3f}% of the stages' time")  # fmt: skip


if __name__ == "__main__":
    main()
