"""A Gaussian-process surrogate of one quantity (averaged metric or a validation loss) over
(ALMR, LR) — the smooth surfaces of the paper's Fig. 1, with their uncertainty.

Contract:

- inputs are scaled to the unit square: u = (ALMR − a_lo) / (a_hi − a_lo) and
  v = (log10 LR − l_lo) / (l_hi − l_lo), where [a_lo, a_hi] × [l_lo, l_hi] is the box the runs
  span (or the one given), so that the two length scales are comparable;
- the model is y = f(u, v) + noise, f ~ GP(m, k), k = c · Matern_ν=5/2(anisotropic) (or RBF)
  and noise ~ N(0, σ²) from a `WhiteKernel` term; y is standardized (`normalize_y=True`) and
  the hyperparameters (c, two length scales, σ²) maximize the log marginal likelihood from
  `n_restarts_optimizer + 1` starts drawn by `random_state`;
- each length scale is at least half the median gap between the distinct scaled values the runs
  take on that axis (never below 0.05; at most 20), unless `length_scale_bounds` is given: runs
  cannot resolve a feature finer than their spacing, and on a small grid a shorter scale turns the
  surface into bumps at the runs (`benchmarks/bench_frontier.py`: the 3 × 3 grid's pick loses
  9% less on synthetic ridges, 4 × 4 5–7% less; 7 × 7 grids and scattered adaptive designs keep
  the 0.05 floor, unchanged);
- `predict(..., return_std=True)` returns the posterior of the latent surface f (the noise
  variance is taken out), `predict_cov` its joint covariance, `noise_std_` the fitted σ;
- `gradient` is the gradient of the posterior mean in the *scaled* plane (∂f/∂u, ∂f/∂v), by
  central finite differences with step 1e-4 (the mean is smooth, so the error is ~1e-8).
"""

import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, Matern, WhiteKernel

from almr.errors import DataError

FD_STEP = 1e-4
MIN_LENGTH_SCALE = 0.05


def _shortest_scale(values: NDArray[np.float64]) -> float:
    """Half the median gap between the distinct values of one scaled axis, at least MIN_LENGTH_SCALE."""
    distinct = np.unique(np.round(values, 9))
    if len(distinct) < 2:
        return MIN_LENGTH_SCALE
    return max(MIN_LENGTH_SCALE, 0.5 * float(np.median(np.diff(distinct))))


class GPSurface:
    """GP regression of y over (ALMR, LR), scikit-learn style: `fit(X, y)` with X[:, 0] = ALMR and
    X[:, 1] = LR on its natural scale (the fit works in log10 LR)."""

    def __init__(
        self,
        kernel: "str | Kernel" = "matern",
        length_scale_bounds: tuple[float, float] | None = None,
        noise_bounds: tuple[float, float] = (1e-6, 1.0),
        n_restarts_optimizer: int = 2,
        box: Sequence[float] | None = None,
        random_state: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.length_scale_bounds = length_scale_bounds
        self.noise_bounds = noise_bounds
        self.n_restarts_optimizer = n_restarts_optimizer
        self.box = box
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, X: ArrayLike, y: ArrayLike) -> "GPSurface":
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float)
        if X.ndim != 2 or X.shape[1] != 2 or len(X) != len(y):
            raise DataError(f"GPSurface.fit: X must be (n, 2) [ALMR, LR] with one y each; got {X.shape}, {y.shape}")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y)) and np.all(X[:, 1] > 0)):
            raise DataError("GPSurface.fit: ALMR, LR and y must be finite and LR positive")
        self.box_ = self._box(X)
        U = self.scale(X[:, 0], X[:, 1])
        bounds = self.length_scale_bounds or [(_shortest_scale(U[:, axis]), 20.0) for axis in (0, 1)]
        self.gp_ = GaussianProcessRegressor(
            kernel=self._kernel(bounds),
            normalize_y=True,
            n_restarts_optimizer=self.n_restarts_optimizer,
            random_state=self.random_state,
        )
        with warnings.catch_warnings(record=True) as caught:
            # the optimizer's notes (a hyperparameter at its bound) go to the report, not the terminal
            warnings.simplefilter("always", ConvergenceWarning)
            self.gp_.fit(U, y)
        self.kernel_ = self.gp_.kernel_
        self.length_scales_ = tuple(float(s) for s in np.atleast_1d(self.kernel_.k1.k2.length_scale))
        self.warnings_ = self._fit_notes(caught)
        # sklearn standardizes y with np.std (0 → 1); the WhiteKernel's level is in those units
        y_std = float(np.std(y)) or 1.0
        self.noise_var_ = float(self.kernel_.k2.noise_level) * y_std**2
        self.noise_std_ = float(np.sqrt(self.noise_var_))
        self.n_train_ = len(y)
        return self

    def _box(self, X: NDArray[np.float64]) -> tuple[float, float, float, float]:
        """(a_lo, a_hi, l_lo, l_hi): the given box, or the one the runs span; refused when flat."""
        if self.box is not None:
            a_lo, a_hi, l_lo, l_hi = (float(b) for b in self.box)
        else:
            a_lo, a_hi = float(X[:, 0].min()), float(X[:, 0].max())
            l_lo, l_hi = float(np.log10(X[:, 1]).min()), float(np.log10(X[:, 1]).max())
        if not (a_hi > a_lo and l_hi > l_lo):
            raise DataError(
                f"GPSurface.fit: the runs span ALMR [{a_lo:g}, {a_hi:g}] and log10 LR [{l_lo:g}, {l_hi:g}]; "
                "a surface needs at least two distinct values of each — add runs at other ALMRs / LRs"
            )
        return a_lo, a_hi, l_lo, l_hi

    def _kernel(self, bounds: Sequence[tuple[float, float]] | tuple[float, float]) -> Kernel:
        """constant × shape + white noise; a fitted kernel_ of another GPSurface is used as it is (its
        hyperparameters start the optimizer: the bootstrap refits)."""
        if isinstance(self.kernel, Kernel):
            return self.kernel
        if self.kernel == "matern":
            shape = Matern(length_scale=[0.5, 0.5], length_scale_bounds=bounds, nu=2.5)
        elif self.kernel == "rbf":
            shape = RBF(length_scale=[0.5, 0.5], length_scale_bounds=bounds)
        else:
            raise DataError(f"GPSurface: unknown kernel {self.kernel!r}; use 'matern' or 'rbf'")
        return ConstantKernel(1.0, (1e-3, 1e3)) * shape + WhiteKernel(1e-2, self.noise_bounds)

    def _fit_notes(self, caught: list[warnings.WarningMessage]) -> list[str]:
        """The optimizer's notes, and a plain word for each length scale at a bound."""
        # sklearn's note on a length scale at a bound says "decrease the bound"; the lower bound is
        # the runs' spacing on purpose, so say what it means instead
        notes = [str(w.message).splitlines()[0] for w in caught if issubclass(w.category, ConvergenceWarning)]
        notes = [n for n in notes if "length_scale" not in n]
        bounds_used = np.broadcast_to(np.atleast_2d(self.kernel_.k1.k2.hyperparameter_length_scale.bounds), (2, 2))
        why = " (half the runs' spacing on that axis)" if self.length_scale_bounds is None else ""
        for axis, scale, (low, high) in zip(("ALMR", "log LR"), self.length_scales_, bounds_used, strict=True):
            if scale <= 1.01 * low:
                notes.append(
                    f"{axis} length scale at its lower bound {low:.3g}{why}: the surface varies as fast as the "
                    "runs can show; runs in between would resolve it"
                )
            elif scale >= 0.99 * high:
                notes.append(f"{axis} length scale at its upper bound {high:.3g}: flat along {axis}")
        return notes

    # ------------------------------------------------------------------ scaling
    def scale(self, almr: ArrayLike, lr: ArrayLike) -> NDArray[np.float64]:
        """(n, 2) scaled coordinates (u, v) of natural (ALMR, LR)."""
        a_lo, a_hi, l_lo, l_hi = self.box_
        almr, lr = np.broadcast_arrays(np.asarray(almr, dtype=float), np.asarray(lr, dtype=float))
        u = (almr.ravel() - a_lo) / (a_hi - a_lo)
        v = (np.log10(lr.ravel()) - l_lo) / (l_hi - l_lo)
        return np.column_stack([u, v])

    def unscale(self, u: ArrayLike, v: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Natural (ALMR, LR) of scaled (u, v)."""
        a_lo, a_hi, l_lo, l_hi = self.box_
        u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
        return a_lo + u * (a_hi - a_lo), 10 ** (l_lo + v * (l_hi - l_lo))

    # ------------------------------------------------------------------ posterior
    def predict_scaled(self, U: ArrayLike, return_std: bool = False):
        U = np.atleast_2d(np.asarray(U, dtype=float))
        if not return_std:
            return self.gp_.predict(U)
        mean, std = self.gp_.predict(U, return_std=True)
        return mean, np.sqrt(np.maximum(std**2 - self.noise_var_, 0.0))

    def predict(self, almr: ArrayLike, lr: ArrayLike, return_std: bool = False):
        """Posterior mean (and std of the latent surface) at natural (ALMR, LR), broadcast together;
        the result has the broadcast shape."""
        shape = np.broadcast_shapes(np.shape(almr), np.shape(lr))
        out = self.predict_scaled(self.scale(almr, lr), return_std)
        if return_std:
            return out[0].reshape(shape), out[1].reshape(shape)
        return out.reshape(shape)

    def predict_cov(self, almr: ArrayLike, lr: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Posterior mean and joint covariance of the latent surface at the flattened points."""
        mean, cov = self.gp_.predict(self.scale(almr, lr), return_cov=True)
        cov = cov - self.noise_var_ * np.eye(len(mean))
        return mean, cov

    def gradient_scaled(self, U: ArrayLike) -> NDArray[np.float64]:
        """(n, 2) gradient (∂f/∂u, ∂f/∂v) of the posterior mean by central differences."""
        U = np.atleast_2d(np.asarray(U, dtype=float))
        grad = np.empty_like(U)
        for axis in range(2):
            step = np.zeros(2)
            step[axis] = FD_STEP
            grad[:, axis] = (self.gp_.predict(U + step) - self.gp_.predict(U - step)) / (2 * FD_STEP)
        return grad

    def gradient(self, almr: ArrayLike, lr: ArrayLike) -> NDArray[np.float64]:
        """Gradient of the posterior mean in the scaled plane at natural (ALMR, LR): shape (n, 2)."""
        return self.gradient_scaled(self.scale(almr, lr))

    def sample(self, almr: ArrayLike, lr: ArrayLike, n_samples: int, random_state: int | None = None):
        """(n_points, n_samples) joint draws of the latent surface at the flattened points."""
        mean, cov = self.predict_cov(almr, lr)
        scale = max(float(np.mean(np.diag(cov))), 1e-12)
        root = None
        # the latent covariance on a dense grid is PSD but numerically singular: the smallest jitter
        # (relative to its mean variance) that lets Cholesky through, eigh as the last resort
        for jitter in (1e-10, 1e-8, 1e-6):
            try:
                root = np.linalg.cholesky(cov + jitter * scale * np.eye(len(mean)))
                break
            except np.linalg.LinAlgError:
                continue
        if root is None:
            vals, vecs = np.linalg.eigh(cov)
            root = vecs * np.sqrt(np.clip(vals, 0.0, None))
        z = np.random.default_rng(random_state).standard_normal((len(mean), n_samples))
        return mean[:, None] + root @ z
