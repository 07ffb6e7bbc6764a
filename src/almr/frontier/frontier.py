"""The two efficient frontiers of the paper's Section 4 / Fig. 1, as scikit-learn-style estimators.

**Metric frontier (Eq. 1 analog).** A GP surface f(ALMR, log10 LR) of the averaged metric
(`GPSurface`). Its *peaks*: the local maxima of the posterior mean on a grid_size × grid_size
grid over the studied box (a cell ≥ its 8 neighbours), and the best observed run. Its *ridge*:
for each distinct studied ALMR r_k, the LR maximizing the posterior mean over a grid of LRs,
refined by a parabola through the best cell and its two neighbours (a ridge point at the edge of
the LR range is flagged: the optimum may lie outside). The frontier is a least-squares
regression of y_k = log10 LR*(r_k) on r_k over the interior ridge points, in the forms

    linear     y = a + b·r                 (primary: the paper's line)
    quadratic  y = a + b·r + c·r²
    log        y = a + b·ln r              (only when every r_k > 0)

A form is chosen by the lowest leave-one-out RMSE (PRESS residuals e_k / (1 − h_kk) of the
hat matrix; ties go to the form with fewer coefficients); AICc (n = number of ridge points,
σ² counted as a parameter) is reported beside it. Uncertainty: `n_bootstrap` resamples of the
runs with replacement (redrawn until they span ≥ 3 ALMRs and ≥ 2 LRs), each refitting the GP
(from the full fit's hyperparameters) and the forms at the same ALMRs; 95% percentile intervals
of the coefficients and pointwise 95% bands of LR*(ALMR).

**Loss frontier (Eq. 2 analog).** The curve of steepest descent of the fitted validation-loss
surface through a start point, in the scaled plane (u, v) = ALMR and log10 LR mapped to [0, 1]
over the studied box (the plane in which "fastest" is measured): the integral curve of
dx/dt = −∇L(x), x(0) = start, followed forward (loss falls) and backward (dx/dt = +∇L) until it
leaves the box or reaches a stationary point (|∇L| below 1e-4 of the surface's range per unit).
Its direction at the start is d = −∇L/|∇L| (scaled), i.e. the slope
d log10 LR / d ALMR = d_v (l_hi − l_lo) / (d_u (a_hi − a_lo)) in natural units. The start is
the recommendation when `analyze_sweep` builds it, or the centre of the box by default.
∇L is the finite-difference gradient of the GP posterior mean (`GPSurface.gradient_scaled`).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import solve_ivp
from scipy.ndimage import maximum_filter

from almr.errors import AlmrError
from almr.frontier.runs import Excluded, sweep_arrays
from almr.frontier.surface import GPSurface
from almr.sweep.records import RunRecord

FORMS: dict[str, tuple[str, Callable[[NDArray[np.float64]], NDArray[np.float64]]]] = {
    "linear": ("log10 LR* = a + b·ALMR", lambda r: np.column_stack([np.ones_like(r), r])),
    "quadratic": ("log10 LR* = a + b·ALMR + c·ALMR²", lambda r: np.column_stack([np.ones_like(r), r, r**2])),
    "log": ("log10 LR* = a + b·ln(ALMR)", lambda r: np.column_stack([np.ones_like(r), np.log(r)])),
}
COEF_NAMES = "abc"


# --------------------------------------------------------------------------- regression forms


@dataclass
class FormFit:
    name: str
    equation: str
    coef: NDArray[np.float64]
    loo_rmse: float | None
    aicc: float | None
    rmse: float

    def predict(self, r: ArrayLike) -> NDArray[np.float64]:
        return FORMS[self.name][1](np.atleast_1d(np.asarray(r, dtype=float))) @ self.coef


def fit_form(name: str, r: NDArray[np.float64], y: NDArray[np.float64]) -> FormFit | str:
    """Least squares of one form; a string saying why it cannot be fitted otherwise."""
    equation, design = FORMS[name]
    if name == "log" and np.any(r <= 0):
        return "needs every ALMR > 0"
    A = design(r)
    p = A.shape[1]
    if len(r) < p + 1:
        return f"needs at least {p + 1} ridge points, has {len(r)}"
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    rss = float(resid @ resid)
    hat = np.einsum("ij,ji->i", A, np.linalg.pinv(A.T @ A) @ A.T)
    loo = None
    if np.all(hat < 1 - 1e-9):
        loo = float(np.sqrt(np.mean((resid / (1 - hat)) ** 2)))
    k = p + 1  # σ² is estimated too
    n = len(r)
    aicc = None
    if n > k + 1:
        aicc = n * np.log(max(rss / n, 1e-300)) + 2 * k + 2 * k * (k + 1) / (n - k - 1)
    return FormFit(name, equation, coef, loo, None if aicc is None else float(aicc), float(np.sqrt(rss / n)))


def select_form(fits: dict[str, FormFit]) -> str:
    """Lowest leave-one-out RMSE; ties (within 1e-12) go to fewer coefficients."""
    scored = [(f.loo_rmse, len(f.coef), name) for name, f in fits.items() if f.loo_rmse is not None]
    if not scored:
        return "linear" if "linear" in fits else next(iter(fits))
    best = min(s[0] for s in scored)
    return min((s for s in scored if s[0] <= best + 1e-12), key=lambda s: s[1])[2]


def ridge(surface: GPSurface, almrs: NDArray[np.float64], n_lr: int) -> dict[str, NDArray[Any]]:
    """log10 LR maximizing the posterior mean at each ALMR (parabolic refinement between cells)."""
    v = np.linspace(0.0, 1.0, n_lr)
    a_lo, a_hi, l_lo, l_hi = surface.box_
    u = (almrs - a_lo) / (a_hi - a_lo)
    U = np.column_stack([np.repeat(u, n_lr), np.tile(v, len(u))])
    mean = surface.predict_scaled(U).reshape(len(u), n_lr)
    j = np.argmax(mean, axis=1)
    best_v = v[j].astype(float)
    edge = (j == 0) | (j == n_lr - 1)
    for i in np.flatnonzero(~edge):
        y0, y1, y2 = mean[i, j[i] - 1], mean[i, j[i]], mean[i, j[i] + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:  # a maximum: the vertex of the parabola lies within half a cell
            best_v[i] += 0.5 * (y0 - y2) / denom * (v[1] - v[0])
    log_lr = l_lo + best_v * (l_hi - l_lo)
    return {"almr": almrs, "log10_lr": log_lr, "metric": mean[np.arange(len(u)), j], "at_edge": edge}


# --------------------------------------------------------------------------- metric frontier


class MetricFrontier:
    """Peaks, ridge and regression LR*(ALMR) of the averaged-metric surface (module docstring)."""

    def __init__(
        self,
        metric_keys: Sequence[str] | None = None,
        forms: Sequence[str] = ("linear", "quadratic", "log"),
        grid_size: int = 41,
        n_bootstrap: int = 200,
        kernel: str = "matern",
        n_restarts_optimizer: int = 2,
        min_runs: int = 6,
        random_state: int | None = None,
    ) -> None:
        self.metric_keys = metric_keys
        self.forms = forms
        self.grid_size = grid_size
        self.n_bootstrap = n_bootstrap
        self.kernel = kernel
        self.n_restarts_optimizer = n_restarts_optimizer
        self.min_runs = min_runs
        self.random_state = random_state

    def fit(self, records: list[RunRecord]) -> "MetricFrontier":
        unknown = [f for f in self.forms if f not in FORMS]
        if unknown or "linear" not in self.forms:
            raise AlmrError(f"frontier forms {list(self.forms)}: known forms are {list(FORMS)}, linear included")
        data = sweep_arrays(records, "metric", list(self.metric_keys or []) or None, self.min_runs)
        self.run_ids_, self.X_, self.y_ = data.run_ids, data.X, data.y
        self.excluded_: list[Excluded] = data.excluded
        self.surface_ = GPSurface(
            kernel=self.kernel, n_restarts_optimizer=self.n_restarts_optimizer, random_state=self.random_state
        ).fit(data.X, data.y)
        self._grid_and_peaks()
        best = int(np.argmax(data.y))
        self.best_run_ = {
            "run_id": data.run_ids[best],
            "almr": float(data.X[best, 0]),
            "lr": float(data.X[best, 1]),
            "metric": float(data.y[best]),
        }
        self.dense_ridge_ = ridge(self.surface_, self.grid_["almr"], self.grid_size)
        r, use = self._regress_ridge(np.unique(data.X[:, 0]))
        self._bootstrap(r.copy(), use)
        return self

    def _grid_and_peaks(self) -> None:
        """The posterior on the grid (`grid_`) and its local maxima (`peaks_`: the "several peaks" of
        Fig. 1, right)."""
        box = self.surface_.box_
        n = self.grid_size
        almr_grid = np.linspace(box[0], box[1], n)
        lr_grid = 10 ** np.linspace(box[2], box[3], n)
        A, L = np.meshgrid(almr_grid, lr_grid, indexing="ij")
        mean, std = self.surface_.predict(A, L, return_std=True)
        self.grid_ = {"almr": almr_grid, "lr": lr_grid, "mean": mean, "std": std}
        is_peak = (mean == maximum_filter(mean, size=3, mode="nearest")) & (mean > mean.min())
        peaks = sorted(zip(*np.nonzero(is_peak), strict=True), key=lambda ij: -mean[ij])[:5]
        self.peaks_ = [
            {"almr": float(A[ij]), "lr": float(L[ij]), "mean": float(mean[ij]), "std": float(std[ij])} for ij in peaks
        ]

    def _regress_ridge(self, studied: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """The paper's peaks per studied ALMR (`ridge_`) and the regression forms through them
        (`forms_`, `form_`, `coef_`); returns the ALMRs regressed and which ridge points they are."""
        self.ridge_ = ridge(self.surface_, studied, 4 * self.grid_size)
        use = ~self.ridge_["at_edge"]
        self.ridge_note_ = ""
        if use.sum() < 3:
            use = np.ones_like(use)
            self.ridge_note_ = (
                "fewer than 3 ridge points lie inside the LR range, so edge points (optimum possibly outside "
                "the studied LRs) were kept in the regression"
            )
        self.ridge_["used"] = use
        r, y = self.ridge_["almr"][use], self.ridge_["log10_lr"][use]
        self.forms_: dict[str, FormFit] = {}
        self.skipped_forms_: dict[str, str] = {}
        for name in self.forms:
            got = fit_form(name, r, y)
            if isinstance(got, str):
                self.skipped_forms_[name] = got
            else:
                self.forms_[name] = got
        if "linear" not in self.forms_:
            raise AlmrError(f"the linear frontier cannot be fitted: {self.skipped_forms_['linear']}")
        self.form_ = select_form(self.forms_)
        self.coef_ = self.forms_["linear"].coef.copy()
        return r, use

    def _bootstrap(self, r_used: NDArray[np.float64], use: NDArray[np.bool_]) -> None:
        rng = np.random.default_rng(self.random_state)
        n = len(self.y_)
        studied = self.ridge_["almr"]
        almr_grid = self.grid_["almr"]
        coefs: dict[str, list[NDArray[np.float64]]] = {name: [] for name in self.forms_}
        curves: dict[str, list[NDArray[np.float64]]] = {name: [] for name in self.forms_}
        self.bootstrap_failures_ = 0
        for _ in range(self.n_bootstrap):
            for _try in range(100):
                idx = rng.integers(0, n, n)
                if len(np.unique(self.X_[idx, 0])) >= 3 and len(np.unique(self.X_[idx, 1])) >= 2:
                    break
            else:
                self.bootstrap_failures_ += 1
                continue
            surf = GPSurface(
                kernel=self.surface_.kernel_,
                n_restarts_optimizer=0,
                box=self.surface_.box_,
                random_state=int(rng.integers(2**31)),
            ).fit(self.X_[idx], self.y_[idx])
            rid = ridge(surf, studied, 4 * self.grid_size)
            for name in self.forms_:
                got = fit_form(name, r_used, rid["log10_lr"][use])
                if isinstance(got, FormFit):
                    coefs[name].append(got.coef)
                    curves[name].append(got.predict(almr_grid))
        self.n_bootstrap_done_ = len(coefs["linear"])
        self.coef_ci_: dict[str, NDArray[np.float64] | None] = {}
        self.band_: dict[str, dict[str, NDArray[np.float64]]] = {}
        for name, fit in self.forms_.items():
            mid = fit.predict(almr_grid)
            if len(coefs[name]) >= 2:
                self.coef_ci_[name] = np.percentile(np.array(coefs[name]), [2.5, 97.5], axis=0).T
                lo, hi = np.percentile(np.array(curves[name]), [2.5, 97.5], axis=0)
            else:
                self.coef_ci_[name] = None
                lo = hi = mid
            self.band_[name] = {"almr": almr_grid, "log10_lr": mid, "lo": lo, "hi": hi}

    def predict_lr(self, almr: ArrayLike, form: str | None = None) -> NDArray[np.float64]:
        """LR*(ALMR) of a fitted form (default: the selected one), natural scale."""
        return 10 ** self.forms_[form or self.form_].predict(almr)


# --------------------------------------------------------------------------- loss frontier


def gradient_path(
    grad: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    start: Sequence[float],
    scale: float = 1.0,
    ascend: bool = False,
    stationary_tol: float = 1e-4,
    t_max: float = 1e4,
) -> tuple[NDArray[np.float64], str]:
    """The integral curve of dx/dt = ∓grad(x)/scale from `start` in the unit square, until it leaves
    the square ("boundary") or |grad|/scale < stationary_tol ("stationary"). Returns the points
    (m, 2) from the start on, and why it stopped."""
    sign = 1.0 if ascend else -1.0

    def rhs(_t: float, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return sign * grad(x[None, :])[0] / scale

    def leaves(_t: float, x: NDArray[np.float64]) -> float:
        return float(min(x[0], 1 - x[0], x[1], 1 - x[1]))

    def flat(_t: float, x: NDArray[np.float64]) -> float:
        return float(np.linalg.norm(grad(x[None, :])[0]) / scale - stationary_tol)

    leaves.terminal = True  # type: ignore[attr-defined]
    leaves.direction = -1  # type: ignore[attr-defined]
    flat.terminal = True  # type: ignore[attr-defined]
    flat.direction = -1  # type: ignore[attr-defined]
    x0 = np.asarray(start, dtype=float)
    if np.linalg.norm(grad(x0[None, :])[0]) / scale < stationary_tol:
        return x0[None, :], "stationary"
    sol = solve_ivp(rhs, (0.0, t_max), x0, events=(leaves, flat), dense_output=True, rtol=1e-8, atol=1e-10)
    # the solver's own steps, each subdivided, so that a plotted curve is smooth
    t = np.unique(np.concatenate([np.linspace(a, b, 5) for a, b in zip(sol.t[:-1], sol.t[1:], strict=True)]))
    points = np.clip(sol.sol(t).T if len(t) else x0[None, :], 0.0, 1.0)
    why = "boundary" if len(sol.t_events[0]) else "stationary" if len(sol.t_events[1]) else "time limit"
    return points, why


class LossFrontier:
    """The steepest-descent curve of a validation-loss surface through a start point (module docstring)."""

    def __init__(
        self,
        source: str = "combined",
        start: Sequence[float] | None = None,
        kernel: str = "matern",
        n_restarts_optimizer: int = 2,
        grid_size: int = 41,
        min_runs: int = 6,
        random_state: int | None = None,
    ) -> None:
        self.source = source
        self.start = start
        self.kernel = kernel
        self.n_restarts_optimizer = n_restarts_optimizer
        self.grid_size = grid_size
        self.min_runs = min_runs
        self.random_state = random_state

    def fit(self, records: list[RunRecord]) -> "LossFrontier":
        data = sweep_arrays(records, f"loss:{self.source}", None, self.min_runs)
        self.run_ids_, self.excluded_ = data.run_ids, data.excluded
        self.surface_ = GPSurface(
            kernel=self.kernel, n_restarts_optimizer=self.n_restarts_optimizer, random_state=self.random_state
        ).fit(data.X, data.y)
        return self._trace()

    def _trace(self) -> "LossFrontier":
        s = self.surface_
        box = s.box_
        n = self.grid_size
        A, L = np.meshgrid(np.linspace(box[0], box[1], n), 10 ** np.linspace(box[2], box[3], n), indexing="ij")
        mean, std = s.predict(A, L, return_std=True)
        self.grid_ = {"almr": A[:, 0], "lr": L[0], "mean": mean, "std": std}
        scale = float(np.ptp(mean)) or 1.0
        if self.start is None:
            start = np.array([0.5, 0.5])
        else:
            start = s.scale(self.start[0], self.start[1])[0]
            if not np.all((start >= -1e-9) & (start <= 1 + 1e-9)):
                raise AlmrError(
                    f"loss frontier start (ALMR {self.start[0]:g}, LR {self.start[1]:g}) lies outside the studied "
                    "box; start inside the ranges of the runs"
                )
            start = np.clip(start, 0.0, 1.0)
        g = s.gradient_scaled(start[None, :])[0]
        norm = float(np.linalg.norm(g))
        self.gradient_ = g
        self.direction_ = -g / norm if norm > 0 else np.zeros(2)
        du, dv = self.direction_
        span_a, span_l = box[1] - box[0], box[3] - box[2]
        self.slope_ = float(dv * span_l / (du * span_a)) if abs(du) > 1e-12 else float("inf")
        down, self.descent_stop_ = gradient_path(s.gradient_scaled, start, scale, ascend=False)
        up, self.ascent_stop_ = gradient_path(s.gradient_scaled, start, scale, ascend=True)
        path = np.vstack([up[::-1], down[1:]])
        almr, lr = s.unscale(path[:, 0], path[:, 1])
        self.start_ = tuple(float(x) for x in s.unscale(start[0], start[1]))
        self.path_ = {"almr": almr, "lr": lr, "loss": s.predict(almr, lr), "start_index": len(up) - 1}
        return self
