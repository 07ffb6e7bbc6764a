"""How good is the frontier's pick from a given set of runs? Regret on synthetic ridges (docs/benchmarks.md).

For `--instances` random surfaces per noise level (`ridge_metric` of tests/synthetic_records.py: a
ridge log10 LR* = a + b·ALMR with random a, b, width, peak ALMR and curvature; seeded, nothing
tuned to them) and four designs over ALMR [0.1, 0.9] × LR [10^-3.5, 10^-2.5] — 3×3, 4×4 and 7×7
grids, and 16 scattered points (what an adaptive study leaves) — it compares three picks:

- the best observed run (what a grid study without a surrogate reports);
- the GP's posterior-mean maximum with a fixed length-scale lower bound of 0.05 (the old default);
- the same with the default bound (half the runs' median spacing per axis, at least 0.05).

Regret = true maximum over the box − true value at the pick, in metric points; lower is better.

    python benchmarks/bench_frontier.py [--instances 40]
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from almr.frontier.surface import GPSurface

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic ridges are a test fixture
from synthetic_records import ridge_metric

BOX = (0.1, 0.9, -3.5, -2.5)


def designs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def grid(n: int) -> np.ndarray:
        return np.array([(a, 10**x) for a in np.linspace(0.1, 0.9, n) for x in np.linspace(-3.5, -2.5, n)])

    scattered = np.column_stack([rng.uniform(0.1, 0.9, 16), 10 ** rng.uniform(-3.5, -2.5, 16)])
    return {"3×3 grid": grid(3), "4×4 grid": grid(4), "7×7 grid": grid(7), "16 scattered": scattered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=40)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    A, L = np.meshgrid(np.linspace(0.1, 0.9, 41), 10 ** np.linspace(-3.5, -2.5, 41), indexing="ij")
    almr, lr = A.ravel(), L.ravel()
    regret: dict[tuple[float, str, str], list[float]] = {}
    for noise in (0.5, 2.0):
        for _ in range(args.instances):
            f = ridge_metric(
                rng.uniform(-3.3, -2.7), rng.uniform(-0.8, 0.3), width=rng.uniform(0.15, 0.8),
                almr_peak=rng.uniform(0.2, 0.8), curvature=rng.uniform(4, 15),
            )  # fmt: skip
            truth = np.array([f(a, np.log10(x)) for a, x in zip(almr, lr, strict=True)])
            for name, X in designs(rng).items():
                true_y = np.array([f(a, np.log10(x)) for a, x in X])
                y = true_y + rng.normal(0.0, noise, len(X))
                picks = {"best observed run": float(true_y[np.argmax(y)])}
                for label, bounds in (("GP, bound 0.05", (0.05, 20.0)), ("GP, spacing bound", None)):
                    surface = GPSurface(length_scale_bounds=bounds, box=BOX, random_state=0).fit(X, y)
                    picks[label] = float(truth[np.argmax(surface.predict(almr, lr))])
                for label, value in picks.items():
                    regret.setdefault((noise, name, label), []).append(float(truth.max()) - value)
    labels = ["best observed run", "GP, bound 0.05", "GP, spacing bound"]
    print(f"mean regret in metric points over {args.instances} surfaces per noise level (lower is better)\n")
    print("| noise σ | design | " + " | ".join(labels) + " | spacing bound / 0.05 |")
    print("|---:|---|" + "---:|" * (len(labels) + 1))
    for noise in (0.5, 2.0):
        for name in designs(np.random.default_rng(0)):
            means = [float(np.mean(regret[(noise, name, label)])) for label in labels]
            cells = " | ".join(f"{m:.2f}" for m in means)
            print(f"| {noise} | {name} | {cells} | {means[2] / means[1]:.2f}× |")


if __name__ == "__main__":
    main()
