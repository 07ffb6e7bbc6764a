"""The blend's guarantees, property-based over random weights: prefix deviation < 2 per source,
every window of B positions within one sequence of ALMR·B, dense in-order ranks, exact counts."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from almr.data.blend import assign, build_tree, counts_at, leaf_weights, source_ids

weights_st = st.lists(
    st.tuples(st.floats(1e-3, 1.0, allow_nan=False), st.booleans()), min_size=1, max_size=12
)


def _check(pairs: list[tuple[float, bool]], almr: float | None, n: int, window: int) -> None:
    raw = np.array([w for w, _ in pairs])
    additional = np.array([a for _, a in pairs])
    if almr is not None and additional.any() and not additional.all():
        # ALMR mode: the group shares are almr / 1 - almr, sub-weights inside
        raw = np.where(additional, almr * raw / raw[additional].sum(), (1 - almr) * raw / raw[~additional].sum())
    weights = raw / raw.sum()
    tree = build_tree(list(weights), list(additional))
    assert np.allclose(leaf_weights(tree, len(weights)), weights)
    ids, ranks = assign(tree, np.arange(n))
    assert np.array_equal(source_ids(tree, 0, n, chunk=97), ids)  # the streaming builder agrees
    onehot = np.zeros((n, len(weights)))
    onehot[np.arange(n), ids] = 1
    prefix = np.cumsum(onehot, axis=0)
    expected = np.arange(1, n + 1)[:, None] * weights
    assert np.abs(prefix - expected).max() < 2  # every prefix, every source
    for i in range(len(weights)):
        assert np.array_equal(ranks[ids == i], np.arange((ids == i).sum()))
    assert np.array_equal(counts_at(tree, n, len(weights)), prefix[-1])
    alpha = weights[additional].sum()
    in_group = np.concatenate([[0], np.cumsum(additional[ids])])
    per_window = in_group[window:] - in_group[:-window]
    assert np.abs(per_window - alpha * window).max() < 1  # every window, hence every global batch


@settings(max_examples=150, deadline=None)
@given(weights_st, st.one_of(st.none(), st.floats(0.0, 1.0)), st.integers(1, 3000), st.integers(1, 300))
def test_prefix_and_window_bounds(pairs: list[tuple[float, bool]], almr: float | None, n: int, window: int) -> None:
    _check(pairs, almr, max(n, window), window)


def test_skewed_weights_many_sources() -> None:
    # one dominant source among many tiny ones: the case a flat greedy handles worst
    pairs = [(0.9, False)] + [(0.1 / 11, False)] * 11 + [(0.05, True)]
    _check(pairs, 0.05, 20000, 256)


def test_paper_scale_counts_are_arithmetic() -> None:
    weights = [0.2, 0.4, 0.25, 0.15]
    tree = build_tree(weights, [True, False, False, False])
    n = 8 * 10**8
    counts = counts_at(tree, n, 4)
    assert counts.sum() == n and np.abs(counts - np.array(weights) * n).max() < 2
    ids, ranks = assign(tree, np.arange(n - 5, n))
    assert all(ranks[k] < counts[ids[k]] for k in range(5))
