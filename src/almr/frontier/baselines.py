"""The loss-based baselines the paper argues against, fitted to the same runs: the D-CPT law and
the Critical Mixture Ratio (CMR).

**D-CPT law** (Que et al. 2024): L(N, D, r) = E + A/N^α + B·r^η/D^β + C/(r + ε)^γ. In one sweep the
model size N is fixed, so A/N^α folds into E, and what is fitted per validation source s is

    L_s(r_s, D) = E + B·r_s^η / D^β + C / (r_s + ε)^γ

over every (run, validation point with D > 0) of the runs used, where D is tokens trained divided
by D_ref (the largest token count, so B is in those units) and r_s is the source's own share of
the mixture: r = ALMR for the additional language, r = 1 − ALMR for the general sources (their
combined share). ε = `eps` is fixed (default 0.01). The objective is the Huber loss (δ =
`huber_delta`) of log L − log L̂, summed over points, minimized by L-BFGS-B from `n_starts`
random starts (drawn by `random_state`) with E, C > 0 (fitted as logs), B signed (a general loss
may rise with D), η ∈ [0, 4], β ∈ [0, 3], γ ∈ [0, 4]; the start with the lowest objective wins, as
in D-CPT and Chinchilla. Reported: the parameters, the objective, RMSE of log residuals and R² of L.

**Critical Mixture Ratio** (Gu et al. 2024): the largest ALMR r ∈ [0, 1] (grid step 0.001) whose
predicted general-source loss at the budget, L_general(1 − r, D_budget), stays within the
tolerance of the base model's loss: ≤ L_base + τ, with τ = ε of the forgetting budget when one is
set (the same question the recommendation answers) and else τ = `cmr_tolerance` × L_base.
"""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize

from almr.errors import AlmrError
from almr.sweep.records import RunRecord

PARAMS = ("E", "B", "eta", "beta", "C", "gamma")
BOUNDS = [(-10.0, 5.0), (-50.0, 50.0), (0.0, 4.0), (0.0, 3.0), (-10.0, 5.0), (0.0, 4.0)]


def _predict(theta: NDArray[np.float64], r: NDArray[np.float64], D: NDArray[np.float64], eps: float):
    log_e, B, eta, beta, log_c, gamma = theta
    # r = 0 with η > 0 makes the B term 0; np.power(0, 0) = 1 keeps η = 0 finite too
    return np.exp(log_e) + B * np.power(r, eta) * np.power(D, -beta) + np.exp(log_c) * np.power(r + eps, -gamma)


def _huber(x: NDArray[np.float64], delta: float) -> NDArray[np.float64]:
    a = np.abs(x)
    return np.where(a <= delta, 0.5 * x**2, delta * (a - 0.5 * delta))


def _huber_objective(
    r: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64], eps: float, delta: float
) -> Callable[[NDArray[np.float64]], tuple[float, NDArray[np.float64]]]:
    """θ ↦ (Σ Huber_δ(log y − log L̂(θ)), its gradient) over the points (r, x = D / D_ref, y)."""
    log_y = np.log(y)
    log_r = np.log(np.where(r > 0, r, 1.0))  # r = 0 only meets η·ln r through r^η = 0
    log_x = np.log(x)
    log_re = np.log(r + eps)

    def objective(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        log_e, B, eta, beta, log_c, gamma = theta
        t_b = np.power(r, eta) * np.exp(-beta * log_x)
        t_c = np.exp(log_c - gamma * log_re)
        pred = np.exp(log_e) + B * t_b + t_c
        if np.any(~np.isfinite(pred)) or np.any(pred <= 0):
            return 1e6, np.zeros(6)
        res = log_y - np.log(pred)
        # Huber: ½res² inside δ, linear outside; its derivative is res clipped to ±δ
        value = float(np.sum(_huber(res, delta)))
        w = -np.clip(res, -delta, delta) / pred
        dpred = np.stack([np.full_like(pred, np.exp(log_e)), t_b, B * t_b * log_r, -B * t_b * log_x, t_c,
                          -t_c * log_re])  # fmt: skip
        return value, dpred @ w

    return objective


def _random_starts(rng: np.random.Generator, y: NDArray[np.float64], n: int) -> NDArray[np.float64]:
    """(n, 6) starting points of θ = (log E, B, η, β, log C, γ), spread over plausible ranges."""
    lo_e = np.log(max(float(y.min()) * 0.5, 1e-6))
    return np.column_stack(
        [
            rng.uniform(lo_e, np.log(float(y.max())), n),
            rng.uniform(-1.0, 1.0, n),
            rng.uniform(0.0, 2.0, n),
            rng.uniform(0.0, 1.5, n),
            rng.uniform(np.log(0.01), np.log(max(float(y.max()), 0.02)), n),
            rng.uniform(0.0, 2.0, n),
        ]
    )


class DCPTLaw:
    """D-CPT law of one validation source over (its mixture share r, tokens D); see the module docstring."""

    def __init__(
        self, eps: float = 0.01, huber_delta: float = 1e-3, n_starts: int = 32, random_state: int | None = None
    ) -> None:
        self.eps = eps
        self.huber_delta = huber_delta
        self.n_starts = n_starts
        self.random_state = random_state

    def fit(self, r: Sequence[float], D: Sequence[float], loss: Sequence[float]) -> "DCPTLaw":
        r_arr, D_arr, y = (np.asarray(v, dtype=float) for v in (r, D, loss))
        keep = (D_arr > 0) & np.isfinite(y) & (y > 0)
        r_arr, D_arr, y = r_arr[keep], D_arr[keep], y[keep]
        if len(y) < 2 * len(PARAMS) or len(np.unique(r_arr)) < 3 or len(np.unique(D_arr)) < 2:
            raise AlmrError(
                f"the D-CPT law needs validation losses at ≥ 3 mixture ratios and ≥ 2 token counts, ≥ "
                f"{2 * len(PARAMS)} points in all; has {len(y)} points, {len(np.unique(r_arr))} ratios, "
                f"{len(np.unique(D_arr))} token counts — validate during the runs (cpt.validation.every_steps)"
            )
        self.d_ref_ = float(D_arr.max())
        x = D_arr / self.d_ref_
        objective = _huber_objective(r_arr, x, y, self.eps, self.huber_delta)
        best = None
        for start in _random_starts(np.random.default_rng(self.random_state), y, self.n_starts):
            res = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=BOUNDS)
            if best is None or res.fun < best.fun:
                best = res
        assert best is not None
        self.theta_ = best.x
        self.objective_ = float(best.fun)
        self.params_ = {
            "E": float(np.exp(best.x[0])),
            "B": float(best.x[1]),
            "eta": float(best.x[2]),
            "beta": float(best.x[3]),
            "C": float(np.exp(best.x[4])),
            "gamma": float(best.x[5]),
            "eps": self.eps,
        }
        pred = _predict(best.x, r_arr, x, self.eps)
        self.rmse_log_ = float(np.sqrt(np.mean((np.log(y) - np.log(pred)) ** 2)))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        self.r2_ = float(1 - np.sum((y - pred) ** 2) / ss_tot) if ss_tot > 0 else float("nan")
        self.n_points_ = len(y)
        return self

    def predict(self, r: Any, D: Any) -> NDArray[np.float64]:
        """Predicted loss at share r after D tokens (natural token count)."""
        return _predict(self.theta_, np.asarray(r, dtype=float), np.asarray(D, dtype=float) / self.d_ref_, self.eps)


def dcpt_points(
    records: list[RunRecord], source: str, additional: bool
) -> tuple[list[float], list[float], list[float]]:
    """(r_s, D, loss) of every validation point of `source` in the completed records."""
    r, D, loss = [], [], []
    for rec in records:
        if rec.status != "completed":
            continue
        share = rec.almr if additional else 1.0 - rec.almr
        history = rec.val_history or [{"tokens": rec.tokens, "loss": rec.val_loss}]
        for entry in history:
            value = (entry.get("loss") or {}).get(source)
            if value is not None and entry.get("tokens", 0) > 0:
                r.append(share)
                D.append(float(entry["tokens"]))
                loss.append(float(value))
    return r, D, loss


def critical_mixture_ratio(
    general_law: DCPTLaw, budget: float, base_loss: float, tolerance: float, step: float = 1e-3
) -> float | None:
    """Largest ALMR r in [0, 1] with L_general(1 − r, budget) ≤ base_loss + tolerance; None if no r is."""
    r = np.round(np.arange(0.0, 1.0 + step / 2, step), 6)
    ok = general_law.predict(1.0 - r, np.full_like(r, budget)) <= base_loss + tolerance
    return float(r[ok].max()) if ok.any() else None
