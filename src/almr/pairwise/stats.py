"""The statistics of a pairwise study, each a small function of plain arrays (docs/pairwise.md
states every formula).

- Win rates of model a over b from W wins, T ties (tie and both-bad votes) and L losses, N = W+T+L:
  W/N and (W + ½T)/N.
- Percentile bootstrap intervals that resample *conversations* with replacement: turns of one
  conversation (and votes of several annotators on one item) are correlated, so resampling votes
  would make the interval too narrow. Resample b draws C conversation indices
  (`rng.integers(0, C, size=C)`, in order) and computes Σ score / Σ count over the votes of the
  drawn conversations; the interval is numpy's linear-interpolated quantiles at α/2 and 1-α/2.
- Agreement on nominal votes: Cohen's κ (two annotators), Fleiss' κ (the same number of votes per
  item), Krippendorff's α (any number of votes per item, missing allowed).
- Position bias: the share of decisive votes (left or right) that chose the left side, with an exact
  two-sided binomial test against ½; sides are balanced per pair, so without a position preference
  the share is ½ whatever the models' strengths.
- Bradley–Terry: strengths θ maximizing Σ s·log σ(θa−θb) + (1−s)·log σ(θb−θa) over votes (s = 1, ½, 0
  for a win, tie, loss: a tie is half a win each, as FastChat), centred to mean 0.
"""

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import optimize, stats

# resamples × conversations per chunk of index draws: bounds memory on studies of many conversations
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class WinCounts:
    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float | None:
        """W/N."""
        return self.wins / self.n if self.n else None

    @property
    def score_rate(self) -> float | None:
        """(W + ½T)/N."""
        return (self.wins + 0.5 * self.ties) / self.n if self.n else None


def win_counts(scores: Sequence[float]) -> WinCounts:
    """Counts of 1 (win), ½ (tie) and 0 (loss) scores."""
    values = np.asarray(scores, dtype=float)
    return WinCounts(int((values == 1).sum()), int((values == 0.5).sum()), int((values == 0).sum()))


def cluster_bootstrap(scores: Sequence[float], clusters: Sequence[Hashable], n_resamples: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Percentile intervals of W/N (`win_rate`) and (W + ½T)/N (`score_rate`) for per-vote `scores`
    (1, ½, 0), resampling `clusters` (conversation ids) with replacement; see the module doc."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        raise ValueError("no votes to resample")
    ids, index = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    n_clusters = len(ids)
    count = np.bincount(index, minlength=n_clusters).astype(float)
    total = np.bincount(index, weights=values, minlength=n_clusters)
    wins = np.bincount(index, weights=(values == 1).astype(float), minlength=n_clusters)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n_clusters)
    score_rates, win_rates = [], []
    for start in range(0, n_resamples, chunk):
        drawn = rng.integers(0, n_clusters, size=(min(chunk, n_resamples - start), n_clusters))
        n = count[drawn].sum(axis=1)
        score_rates.append(total[drawn].sum(axis=1) / n)
        win_rates.append(wins[drawn].sum(axis=1) / n)
    alpha = 1.0 - confidence
    q = [alpha / 2, 1 - alpha / 2]
    return {
        "score_rate": tuple(float(x) for x in np.quantile(np.concatenate(score_rates), q)),  # type: ignore[dict-item]
        "win_rate": tuple(float(x) for x in np.quantile(np.concatenate(win_rates), q)),  # type: ignore[dict-item]
    }


# ------------------------------------------------------------------------------------------- agreement


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's κ of two annotators' labels on the same items; None when undefined (both always gave
    one and the same label: chance agreement is 1)."""
    if len(first) != len(second) or not first:
        raise ValueError("Cohen's kappa needs two equally long, non-empty label lists")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    left, right = Counter(first), Counter(second)
    expected = sum(left[c] * right[c] for c in left) / (n * n)
    return None if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[int]]) -> float | None:
    """Fleiss' κ of an items × categories table of counts, every row summing to the same m ≥ 2;
    None when undefined (every vote in one category)."""
    counts = np.asarray(table, dtype=float)
    m = counts.sum(axis=1)
    if counts.ndim != 2 or counts.shape[0] == 0 or not np.all(m == m[0]) or m[0] < 2:
        raise ValueError("Fleiss' kappa needs items with the same number (≥ 2) of votes each")
    per_item = ((counts**2).sum(axis=1) - m) / (m * (m - 1))
    shares = counts.sum(axis=0) / counts.sum()
    expected = float((shares**2).sum())
    return None if expected == 1 else (float(per_item.mean()) - expected) / (1 - expected)


def krippendorff_alpha(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's α for nominal values: `units` holds each unit's values (any number; units with
    fewer than two are not pairable and ignored). From the coincidence matrix o: α = 1 − (n−1)·Σ_{c≠k} o_ck
    / Σ_{c≠k} n_c·n_k. None when undefined (fewer than two pairable values, or one value only)."""
    pairable = [list(u) for u in units if len(u) >= 2]
    categories = sorted({v for u in pairable for v in u}, key=str)
    where = {c: i for i, c in enumerate(categories)}
    coincidence = np.zeros((len(categories), len(categories)))
    for unit in pairable:
        tally = np.bincount([where[v] for v in unit], minlength=len(categories)).astype(float)
        coincidence += (np.outer(tally, tally) - np.diag(tally)) / (len(unit) - 1)
    totals = coincidence.sum(axis=1)
    n = totals.sum()
    expected = n * n - float((totals**2).sum())  # Σ_{c≠k} n_c n_k
    if n < 2 or expected == 0:
        return None
    observed = coincidence.sum() - np.trace(coincidence)
    return float(1 - (n - 1) * observed / expected)


def agreement(votes_by_item: dict[Hashable, dict[str, str]]) -> dict[str, object]:
    """Agreement of the annotators on the items several of them voted on (`{item: {annotator: choice}}`)."""
    annotators = sorted({a for votes in votes_by_item.values() for a in votes})
    shared = {item: votes for item, votes in votes_by_item.items() if len(votes) >= 2}
    if len(annotators) < 2:
        who = f" ({annotators[0]})" if annotators else ""
        return {"available": False, "reason": f"only {len(annotators)} annotator voted{who}: agreement needs two"}
    if not shared:
        return {"available": False, "reason": "no item has votes from two annotators yet (shared items not done)"}
    units = [list(v.values()) for v in shared.values()]
    pairs = sum(len(u) * (len(u) - 1) / 2 for u in units)
    agreeing = sum(sum(a == b for a, b in combinations(u, 2)) for u in units)
    sizes = Counter(len(u) for u in units)
    m = max(sizes, key=lambda size: (sizes[size], size))
    categories = sorted({v for u in units for v in u})
    table = [[u.count(c) for c in categories] for u in units if len(u) == m]
    cohen = []
    for a, b in combinations(annotators, 2):
        both = [v for v in shared.values() if a in v and b in v]
        if both:
            cohen.append({"annotators": [a, b], "items": len(both),
                          "kappa": cohen_kappa([v[a] for v in both], [v[b] for v in both])})  # fmt: skip
    defined = [c["kappa"] for c in cohen if c["kappa"] is not None]
    return {
        "available": True,
        "items": len(shared),
        "annotators": len(annotators),
        "percent_agreement": agreeing / pairs,
        "krippendorff_alpha": krippendorff_alpha(units),
        "fleiss_kappa": fleiss_kappa(table) if len(categories) > 0 else None,
        "fleiss_items": len(table),
        "fleiss_votes_per_item": m,
        "cohen_kappa_mean": float(np.mean(defined)) if defined else None,
        "cohen_kappa": cohen,
    }


# ------------------------------------------------------------------------------------------- position bias


def position_bias(choices: Sequence[str]) -> dict[str, object]:
    """Share of decisive votes for the left side, and the exact two-sided binomial p-value against ½."""
    left = sum(c == "left" for c in choices)
    right = sum(c == "right" for c in choices)
    decisive = left + right
    if decisive == 0:
        return {"decisive": 0, "left": 0, "left_share": None, "p_value": None}
    return {"decisive": decisive, "left": left, "left_share": left / decisive,
            "p_value": float(stats.binomtest(left, decisive, 0.5).pvalue)}  # fmt: skip


# ------------------------------------------------------------------------------------------- Bradley–Terry


def bradley_terry(models: Sequence[str], comparisons: Sequence[tuple[str, str, float]],
                  ridge: float = 1e-6) -> dict[str, float]:  # fmt: skip
    """Bradley–Terry strengths (natural-log scale, mean 0) from (a, b, score of a) comparisons; a tiny
    ridge keeps a model that never lost finite (its strength is then only a lower bound)."""
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[x] for x, _, _ in comparisons])
    b = np.array([index[y] for _, y, _ in comparisons])
    s = np.array([score for _, _, score in comparisons], dtype=float)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        d = theta[a] - theta[b]
        p = 1.0 / (1.0 + np.exp(-d))
        value = -np.sum(s * np.log(p + 1e-300) + (1 - s) * np.log(1 - p + 1e-300)) + ridge * np.sum(theta**2)
        g = s - p
        grad = -np.bincount(a, weights=g, minlength=len(models)) + np.bincount(b, weights=g, minlength=len(models))
        return float(value), grad + 2 * ridge * theta

    fit = optimize.minimize(loss, np.zeros(len(models)), jac=True, method="L-BFGS-B", options={"gtol": 1e-10})
    theta = fit.x - fit.x.mean()
    return {m: float(theta[i]) for m, i in index.items()}
