"""Synthetic sweeps with a known answer: run records made from stated surfaces. A test fixture
(tests/frontier/test_frontier_*.py) that benchmarks/bench_frontier.py uses too; its records, saved under
SWEEP_DIR/runs/, also let one try `almr frontier` without training anything.

`synthetic_sweep` evaluates, at every (ALMR r, LR) of a grid (x = log10 LR):

- the averaged metric `metric(r, x)` (plus N(0, metric_noise²)), with a probe trajectory that
  rises from the base score as sqrt(tokens / budget) and two probe tasks whose mean it is —
  `zh` = metric + 10(r − 0.5), `en` = metric − 10(r − 0.5) — so Chinese gains and English
  losses with the ALMR are visible;
- each source's loss `losses[s](r, x, D)` along a validation history at D = 0, budget/n, …,
  budget tokens (D = 0 is the base model: `base_loss[s]`), times exp(N(0, loss_noise²)).

`ridge_metric(a, b)` is a metric whose best log10 LR at ALMR r is exactly a + b·r;
`dcpt_loss` is the D-CPT law L(r, D) = E + B·r^η/D^β + C/(r + ε)^γ with D in units of `d_ref`.
"""

from collections.abc import Callable, Sequence

import numpy as np

from almr.sweep.records import RunRecord

MetricFn = Callable[[float, float], float]
LossFn = Callable[[float, float, float], float]


def dcpt_loss(r, D, E: float, B: float, eta: float, beta: float, C: float, gamma: float, eps: float = 0.01,
              d_ref: float = 1.0):  # fmt: skip
    r = np.asarray(r, dtype=float)
    D = np.asarray(D, dtype=float) / d_ref
    return E + B * np.power(r, eta) / np.power(D, beta) + C / np.power(r + eps, gamma)


def ridge_metric(a: float, b: float, width: float = 0.5, height: float = 12.0, base: float = 40.0,
                 almr_peak: float = 0.5, curvature: float = 8.0) -> MetricFn:  # fmt: skip
    """metric(r, x) = base + height·exp(−½((x − a − b·r)/width)²) − curvature·(r − almr_peak)²."""

    def metric(r: float, x: float) -> float:
        return base + height * np.exp(-0.5 * ((x - a - b * r) / width) ** 2) - curvature * (r - almr_peak) ** 2

    return metric


def paper_like_losses(budget: float, x_ref: float = -4.0) -> tuple[dict[str, LossFn], dict[str, float]]:
    """Chinese loss falls with ALMR and LR, English loss rises with them (D-CPT law along tokens in
    each source's own share, plus a log-LR term); the base losses at D = 0."""

    def zh(r: float, x: float, D: float) -> float:
        return float(dcpt_loss(r, D, 2.2, 0.4, 0.3, 0.35, 0.35, 0.4, d_ref=budget) - 0.15 * (x - x_ref))

    def en(r: float, x: float, D: float) -> float:
        return float(dcpt_loss(1 - r, D, 2.0, 0.15, 0.5, 0.3, 0.1, 0.5, d_ref=budget) + 0.05 * (x - x_ref))

    def math(r: float, x: float, D: float) -> float:
        return en(r, x, D) + 0.3

    return {"zh": zh, "en": en, "math": math}, {"zh": 4.2, "en": 2.25, "math": 2.55}


def synthetic_sweep(
    almrs: Sequence[float],
    lrs: Sequence[float],
    metric: MetricFn,
    losses: dict[str, LossFn],
    base_loss: dict[str, float],
    tokens: int = 1_000_000,
    n_history: int = 6,
    metric_noise: float = 0.2,
    loss_noise: float = 0.002,
    base_metric: float = 30.0,
    failed: Sequence[int] = (),
    base_hash: str = "synthetic",
    seed: int = 0,
) -> list[RunRecord]:
    """One completed record per (ALMR, LR); the runs whose indices are in `failed` are failed
    records with an error and no numbers."""
    rng = np.random.default_rng(seed)
    records = []
    points = [(r, lr) for r in almrs for lr in lrs]
    width = len(str(len(points)))
    for i, (r, lr) in enumerate(points):
        run_id = f"run-{i:0{width}d}"
        if i in failed:
            records.append(
                RunRecord(
                    run_id=run_id,
                    almr=r,
                    lr=lr,
                    status="failed",
                    base_hash=base_hash,
                    error="CUDA out of memory at step 12",
                )
            )
            continue
        x = float(np.log10(lr))
        final = float(metric(r, x) + rng.normal(0.0, metric_noise))
        history = _val_history(rng, r, x, losses, base_loss, tokens, n_history, loss_noise)
        probes = _probe_history(r, final, base_metric, tokens, n_history)
        records.append(
            RunRecord(
                run_id=run_id,
                almr=r,
                lr=lr,
                status="completed",
                base_hash=base_hash,
                tokens=tokens,
                steps=n_history * 10,
                wall_time_s=60.0,
                val_loss=history[-1]["loss"],
                val_history=history,
                scores=probes[-1]["scores"],
                probe_history=probes,
                averaged_metric=final,
            )
        )
    return records


def _val_history(
    rng: np.random.Generator,
    r: float,
    x: float,
    losses: dict[str, LossFn],
    base_loss: dict[str, float],
    tokens: int,
    n_history: int,
    loss_noise: float,
) -> list[dict]:
    """Validation at D = 0 (the base losses), budget/n, …, budget tokens, each loss times exp(noise)."""
    history = []
    for j in range(n_history + 1):
        D = tokens * j / n_history
        if j == 0:
            loss = dict(base_loss)
        else:
            loss = {s: float(f(r, x, D) * np.exp(rng.normal(0.0, loss_noise))) for s, f in losses.items()}
        history.append({"tokens": int(D), "loss": loss})
    return history


def _probe_history(r: float, final: float, base_metric: float, tokens: int, n_history: int) -> list[dict]:
    """Probes rising from the base score to `final` as sqrt(tokens / budget), `zh` and `en` around it."""
    probes = []
    for j in range(n_history + 1):
        frac = j / n_history
        m = base_metric + (final - base_metric) * np.sqrt(frac)
        tilt = 10.0 * (r - 0.5) * frac
        probes.append({"tokens": int(tokens * frac), "scores": {"zh": m + tilt, "en": m - tilt}})
    return probes
