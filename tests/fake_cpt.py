"""A stand-in for `almr cpt CONFIG` that the sweep's local launcher runs as a subprocess
(tests/sweep/test_sweep_launch.py): `python tests/fake_cpt.py RUN/config.yaml`. It reads ALMR and LR from
the run's config.yaml and writes metrics.jsonl from a known surface, slowly enough to be watched.
It imports no Optuna and no trainer, so that it starts fast."""

import json
import os
import sys
import time
from pathlib import Path

import yaml

from fake_runs import KEYS, Surface

SURFACE = Surface(a=-3.5, b=0.5, width=0.5, peak=0.5, spread=0.4, height=12.0, tilt=1.0)


def fake_cpt(config_path: str) -> int:
    """Exits 3 at ALMR 0.8 (with a fake CUDA error in its log), sleeps between probes at LR 1e-4."""
    config = yaml.safe_load(Path(config_path).read_text())
    almr, lr = config["mixture"]["almr"], config["cpt"]["optimizer"]["lr"]
    run_dir = Path(config["cpt"]["run_dir"])
    with (run_dir / "metrics.jsonl").open("w") as out:
        out.write(json.dumps({"event": "start", "step": 0, "tokens": 0, "threads": os.environ["OMP_NUM_THREADS"]}))
        out.write("\n")
        if almr == 0.8:
            print("CUDA out of memory (fake)", flush=True)
            return 3
        final = float(SURFACE.value(almr, lr))
        for step in range(1, 6):
            value = SURFACE.base + (final - SURFACE.base) * step / 5
            event = {"event": "probe", "step": step, "tokens": step * 1000, "scores": dict.fromkeys(KEYS, value)}
            out.write(json.dumps(event) + "\n")
            out.flush()
            time.sleep(0.6 if lr == 1e-4 else 0.05)
        out.write(json.dumps({"event": "end", "step": 5, "tokens": 5000}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(fake_cpt(sys.argv[1]))
