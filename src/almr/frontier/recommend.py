"""The (ALMR, LR) of the full run, with the probability that it is the best one.

Contract (`Recommender.fit(records, baseline)`):

- target: `metric` (the averaged metric, maximized: the paper's choice) or `loss:SOURCE` (that
  source's final validation loss, minimized: the choice of a study whose runs recorded losses only,
  with SOURCE the additional language's);
- candidates: a grid_size × grid_size grid over the studied box (ALMR linear, LR logarithmic);
- constraint (optional, the CMR idea): with ε = `epsilon` set, a candidate is feasible when the
  posterior mean of the `constraint_source` (English) validation-loss GP is ≤ base loss + ε, the
  base loss being the base model's (`baseline`); the probability that it holds,
  P(L ≤ base + ε) = Φ((base + ε − μ) / σ), is reported for the chosen cell;
- recommendation: the feasible cell with the best posterior mean of the target (highest metric,
  lowest loss);
- its posterior probability of being best: draw `n_samples` joint samples of the latent target
  surface on all candidates (`GPSurface.sample`); in each, find the best feasible cell; report
  the share of samples whose best cell lies within scaled distance `radius` of the
  recommendation (in the unit square of (ALMR, log10 LR): 0.1 = a tenth of each studied range)
  and, for reference, the share hitting the very cell (which shrinks as the grid refines);
- the spread of those best cells (2.5–97.5% of ALMR and of LR) is the credible region of the best
  point; the expected target at the recommendation is the posterior mean ± std.
"""

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

from almr.errors import AlmrError
from almr.frontier.runs import Baseline, sweep_arrays
from almr.frontier.surface import GPSurface
from almr.sweep.records import RunRecord


class Recommender:
    """Maximize the averaged metric (or minimize a loss), optionally under an English-forgetting budget
    (module docstring)."""

    def __init__(
        self,
        metric_keys: Sequence[str] | None = None,
        epsilon: float | None = None,
        constraint_source: str | None = "en",
        target: str = "metric",
        grid_size: int = 41,
        n_samples: int = 2000,
        radius: float = 0.1,
        kernel: str = "matern",
        n_restarts_optimizer: int = 2,
        min_runs: int = 6,
        random_state: int | None = None,
    ) -> None:
        self.metric_keys = metric_keys
        self.epsilon = epsilon
        self.constraint_source = constraint_source
        self.target = target
        self.grid_size = grid_size
        self.n_samples = n_samples
        self.radius = radius
        self.kernel = kernel
        self.n_restarts_optimizer = n_restarts_optimizer
        self.min_runs = min_runs
        self.random_state = random_state

    def fit(self, records: list[RunRecord], baseline: Baseline | None = None) -> "Recommender":
        if self.target != "metric" and not self.target.startswith("loss:"):
            raise AlmrError(f"Recommender target {self.target!r}: use 'metric' or 'loss:SOURCE'")
        keys = list(self.metric_keys or []) or None
        data = sweep_arrays(records, self.target, keys if self.target == "metric" else None, self.min_runs)
        self.excluded_ = data.excluded
        self.surface_ = GPSurface(
            kernel=self.kernel, n_restarts_optimizer=self.n_restarts_optimizer, random_state=self.random_state
        ).fit(data.X, data.y)
        if self.target == "metric":
            self.metric_surface_ = self.surface_
        sign = 1.0 if self.target == "metric" else -1.0  # the best cell is an argmax of sign × target
        box = self.surface_.box_
        n = self.grid_size
        A, L = np.meshgrid(np.linspace(box[0], box[1], n), 10 ** np.linspace(box[2], box[3], n), indexing="ij")
        almr, lr = A.ravel(), L.ravel()
        mean, std = self.surface_.predict(almr, lr, return_std=True)
        self.grid_ = {"almr": A[:, 0], "lr": L[0], "mean": mean.reshape(n, n), "std": std.reshape(n, n)}
        feasible, p_ok = self._feasible(records, baseline, almr, lr)

        masked = np.where(feasible, sign * mean, -np.inf)
        k = int(np.argmax(masked))
        samples = sign * self.surface_.sample(almr, lr, self.n_samples, self.random_state)
        samples[~feasible] = -np.inf
        winners = np.argmax(samples, axis=0)
        U = self.surface_.scale(almr, lr)
        dist = np.linalg.norm(U[winners] - U[k], axis=1)
        self.almr_, self.lr_ = float(almr[k]), float(lr[k])
        self.value_mean_, self.value_std_ = float(mean[k]), float(std[k])
        if self.target == "metric":
            self.metric_mean_, self.metric_std_ = self.value_mean_, self.value_std_
        self.prob_best_ = float(np.mean(dist <= self.radius))
        self.prob_best_cell_ = float(np.mean(winners == k))
        self.prob_constraint_ = None if p_ok is None else float(p_ok[k])
        self.credible_ = {
            "almr": [float(v) for v in np.percentile(almr[winners], [2.5, 97.5])],
            "lr": [float(10**v) for v in np.percentile(np.log10(lr[winners]), [2.5, 97.5])],
        }
        self.argmax_samples_ = {"almr": almr[winners], "lr": lr[winners]}
        return self

    def _feasible(
        self, records: list[RunRecord], baseline: Baseline | None, almr: NDArray[np.float64], lr: NDArray[np.float64]
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64] | None]:
        """Which candidates keep the budget (all without `epsilon`), and P(the budget holds) at each
        (None without `epsilon`); sets `constraint_` and, with a budget, `loss_surface_` and its grid
        `constraint_grid_` (the posterior mean on the candidates, grid-shaped)."""
        self.constraint_ = None
        if self.epsilon is None:
            return np.ones(len(almr), dtype=bool), None
        src = self.constraint_source
        if src is None:
            raise AlmrError(
                f"a forgetting budget (frontier.epsilon={self.epsilon}) watches a general-language validation "
                "source, and none was found: set frontier.general_source to a source the runs validate"
            )
        if baseline is None or src not in baseline.val_loss:
            raise AlmrError(
                f"a forgetting budget (frontier.epsilon={self.epsilon}) needs the base model's {src} validation "
                f'loss: write SWEEP_DIR/baseline.json ({{"val_loss": {{"{src}": ...}}}}) or validate before '
                "the first step (cpt.validation.every_steps > 0); or unset frontier.epsilon"
            )
        loss_data = sweep_arrays(records, f"loss:{src}", None, self.min_runs)
        self.loss_surface_ = GPSurface(
            kernel=self.kernel,
            n_restarts_optimizer=self.n_restarts_optimizer,
            box=self.surface_.box_,
            random_state=self.random_state,
        ).fit(loss_data.X, loss_data.y)
        l_mean, l_std = self.loss_surface_.predict(almr, lr, return_std=True)
        self.constraint_grid_ = l_mean.reshape(self.grid_size, self.grid_size)
        limit = baseline.val_loss[src] + self.epsilon
        feasible = l_mean <= limit
        p_ok = norm.cdf((limit - l_mean) / np.maximum(l_std, 1e-12))
        self.constraint_ = {
            "source": src,
            "base": baseline.val_loss[src],
            "epsilon": self.epsilon,
            "limit": limit,
            "feasible_share": float(feasible.mean()),
        }
        if not feasible.any():
            best_loss = float(l_mean.min())
            raise AlmrError(
                f"no (ALMR, LR) in the studied ranges keeps the {src} loss within ε = {self.epsilon:g} of the "
                f"base ({baseline.val_loss[src]:.4f}): the lowest predicted is {best_loss:.4f}; raise "
                "frontier.epsilon, or study lower ALMRs / LRs"
            )
        return feasible, p_ok
