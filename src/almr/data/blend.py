"""The exact, deterministic blend: which source fills each position of the sequence stream.

The blend is a binary *split tree* over the sources. Each inner node has a ratio r (the
weight of its left subtree over its own) and sends the j-th sequence that reaches it
(j = 0, 1, ...) to the left child iff

    floor(r·(j+1) + 1/2) − floor(r·j + 1/2) = 1,

so that after m sequences the left child has received exactly floor(r·m + 1/2) of them — a
Sturmian (Beatty) sequence, as evenly spread as integers allow: |left(m) − r·m| ≤ 1/2 for
every m, and any window of B consecutive arrivals sends floor(r·B) or ceil(r·B) left.

Tree shape (`build_tree`): the root splits the additional-language group from the rest, at
r = ALMR. Inside a group, a node whose heaviest source weighs ≥ 1/3 of the node splits that
source off; otherwise the sources are split into two halves by the greedy (LPT) partition,
whose sides differ by less than the heaviest source, so both weigh ≤ 2/3 of the node.

Guarantees (tested in tests/data/test_blend.py; n counts positions from the start):
1. Every window of the stream — in particular every global batch of B sequences — holds
   floor(ALMR·B) or ceil(ALMR·B) additional-language sequences: within one of ALMR·B.
2. Every prefix: |count_i(n) − w_i·n| < 2 for every source i. Proof: take a leaf L at depth d
   on the path N_0 (root) … N_d = L, with weights W_l (W_0 = 1), counts m_l (m_0 = n) and
   ratios r_l = W_l / W_{l−1}. The error telescopes:
       count_L − W_L·n = Σ_{l=1..d} (W_L / W_l) · (m_l − r_l·m_{l−1}),
   and each bracket is at most 1/2 in size. The factors are 1 for l = d, ≤ 1 for l = d−1,
   and, because every inner node below the group split weighs ≤ 2/3 of its parent,
   ≤ (2/3)^(d−1−l) further up. They sum to less than 1 + Σ_t (2/3)^t = 4, so the error is
   below 2. (A group of one source: ≤ 1/2.)
3. The j-th sequence a source receives has rank j in that source's stream (ranks are dense,
   in order), so a source's stream is consumed front to back and never repeats.

Everything is arithmetic: `assign(tree, positions)` maps any array of positions to
(source id, rank) in O(depth) vectorized steps, and `counts_at(tree, n)` gives every source's
count in the first n positions in O(depth). No blend index is ever stored: building it for
10⁸ sequences is a streaming pass (see benchmarks/bench_data.py), and looking up one global
batch costs microseconds at any scale. Floats: r·j is computed in float64 the same way for
counts and for membership, so the two always agree; rounding can move a boundary by ~n·2⁻⁵³.

Tree nodes are JSON-ready dicts: {"source": i} or {"ratio": r, "left": node, "right": node}.
"""

from typing import Any

import numpy as np

Node = dict[str, Any]


def build_tree(weights: list[float], additional: list[bool]) -> Node:
    """The split tree for positive `weights` (need not sum to 1; zero weights are left out)
    with the additional-language group split off at the root."""
    items = [(i, float(w)) for i, w in enumerate(weights) if w > 0]
    if not items:
        raise ValueError("no source has a positive weight")
    group = [it for it in items if additional[it[0]]]
    rest = [it for it in items if not additional[it[0]]]
    if group and rest:
        return _split(_balanced(group), _balanced(rest), _total(group), _total(rest))
    return _balanced(items)


def _total(items: list[tuple[int, float]]) -> float:
    return sum(w for _, w in items)


def _split(left: Node, right: Node, w_left: float, w_right: float) -> Node:
    return {"ratio": w_left / (w_left + w_right), "left": left, "right": right}


def _balanced(items: list[tuple[int, float]]) -> Node:
    if len(items) == 1:
        return {"source": items[0][0]}
    ordered = sorted(items, key=lambda it: (-it[1], it[0]))
    total = _total(ordered)
    if ordered[0][1] * 3 >= total:
        left, right = ordered[:1], ordered[1:]
    else:
        left, right = [], []
        w_left = w_right = 0.0
        for it in ordered:
            if w_left <= w_right:
                left.append(it)
                w_left += it[1]
            else:
                right.append(it)
                w_right += it[1]
    return _split(_balanced(left), _balanced(right), _total(left), _total(right))


def _left_count(ratio: float, m: np.ndarray | int) -> np.ndarray:
    return np.floor(ratio * np.asarray(m, dtype=np.float64) + 0.5).astype(np.int64)


def counts_at(tree: Node, n: int, num_sources: int) -> np.ndarray:
    """How many of the first n positions each source fills."""
    counts = np.zeros(num_sources, dtype=np.int64)

    def walk(node: Node, m: int) -> None:
        if "source" in node:
            counts[node["source"]] += m
            return
        left = int(_left_count(node["ratio"], m))
        walk(node["left"], left)
        walk(node["right"], m - left)

    walk(tree, int(n))
    return counts


def assign(tree: Node, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source id, rank within that source) of each position (0-based, any order, int64)."""
    positions = np.asarray(positions, dtype=np.int64)
    source = np.empty(len(positions), dtype=np.int64)
    rank = np.empty(len(positions), dtype=np.int64)

    def walk(node: Node, where: np.ndarray, j: np.ndarray) -> None:
        if "source" in node:
            source[where] = node["source"]
            rank[where] = j
            return
        before = _left_count(node["ratio"], j)
        left = _left_count(node["ratio"], j + 1) > before
        walk(node["left"], where[left], before[left])
        right = ~left
        walk(node["right"], where[right], j[right] - before[right])

    walk(tree, np.arange(len(positions)), positions)
    return source, rank


def leaf_weights(tree: Node, num_sources: int) -> np.ndarray:
    """The weight each source gets from the tree (products of ratios along its path)."""
    out = np.zeros(num_sources, dtype=np.float64)

    def walk(node: Node, w: float) -> None:
        if "source" in node:
            out[node["source"]] = w
            return
        walk(node["left"], w * node["ratio"])
        walk(node["right"], w * (1.0 - node["ratio"]))

    walk(tree, 1.0)
    return out


def source_ids(tree: Node, start: int, stop: int, chunk: int = 1 << 20) -> np.ndarray:
    """Source id of every position in [start, stop) as int8 (≤ 127 sources), chunk by chunk.

    A contiguous range of a node's arrivals sends contiguous ranges of arrivals to both
    children, so each node needs one membership mask and two masked writes: no gathers."""
    out = np.empty(stop - start, dtype=np.int8)
    for lo in range(start, stop, chunk):
        hi = min(lo + chunk, stop)
        out[lo - start : hi - start] = _ids_range(tree, lo, hi)
    return out


def _ids_range(node: Node, a: int, b: int) -> np.ndarray:
    if "source" in node:
        return np.full(b - a, node["source"], dtype=np.int8)
    c = np.arange(a, b + 1, dtype=np.float64)
    c *= node["ratio"]
    c += 0.5
    np.floor(c, out=c)  # c[k] = left arrivals among the node's first a+k
    to_left = c[1:] != c[:-1]
    left_a, left_b = int(c[0]), int(c[-1])
    out = np.empty(b - a, dtype=np.int8)
    out[to_left] = _ids_range(node["left"], left_a, left_b)
    out[~to_left] = _ids_range(node["right"], a - left_a, b - left_b)
    return out
