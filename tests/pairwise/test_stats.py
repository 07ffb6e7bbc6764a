"""The statistics on hand-made inputs with known answers (published examples where there are some)."""

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from almr.pairwise.stats import (
    agreement,
    bradley_terry,
    cluster_bootstrap,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    position_bias,
    win_counts,
)


def test_win_counts_and_both_rates() -> None:
    counts = win_counts([1, 1, 1, 0.5, 0.5, 0, 1, 0])
    assert (counts.wins, counts.ties, counts.losses, counts.n) == (4, 2, 2, 8)
    assert counts.win_rate == 4 / 8
    assert counts.score_rate == (4 + 1) / 8
    assert win_counts([]).win_rate is None


def test_bootstrap_of_two_conversations_is_the_exact_distribution() -> None:
    # two conversations, one won and one lost: a resample holds both (1/2), two wins (1/4) or two
    # losses (1/4), so the 2.5% and 97.5% quantiles are exactly 0 and 1
    ci = cluster_bootstrap([1.0, 0.0], ["c1", "c2"], n_resamples=4000, seed=1)
    assert ci == {"score_rate": (0.0, 1.0), "win_rate": (0.0, 1.0)}
    # every vote a win: no resample can say otherwise
    assert cluster_bootstrap([1, 1, 1], ["a", "b", "a"], 500)["score_rate"] == (1.0, 1.0)


def _naive_bootstrap(scores: list[float], clusters: list[str], n: int, confidence: float, seed: int) -> dict:
    """An independent computation: draw conversations one resample at a time, gather their votes from
    the raw list (with multiplicity), count wins and ties vote by vote."""
    ids = sorted(set(clusters))
    rng = np.random.default_rng(seed)
    score_rates, win_rates = [], []
    for _ in range(n):
        drawn = [ids[i] for i in rng.integers(0, len(ids), size=len(ids))]
        votes = [s for c in drawn for s, k in zip(scores, clusters, strict=True) if k == c]
        score_rates.append((sum(v == 1 for v in votes) + 0.5 * sum(v == 0.5 for v in votes)) / len(votes))
        win_rates.append(sum(v == 1 for v in votes) / len(votes))
    q = [(1 - confidence) / 2, 1 - (1 - confidence) / 2]
    return {"score_rate": tuple(np.quantile(score_rates, q)), "win_rate": tuple(np.quantile(win_rates, q))}


def test_bootstrap_resamples_conversations_as_the_naive_loop_does() -> None:
    rng = np.random.default_rng(7)
    clusters = [f"c{int(c)}" for c in rng.integers(0, 15, size=60)]
    scores = list(rng.choice([0.0, 0.5, 1.0], size=60, p=[0.3, 0.2, 0.5]))
    fast = cluster_bootstrap(scores, clusters, n_resamples=300, confidence=0.9, seed=3)
    naive = _naive_bootstrap(scores, clusters, 300, 0.9, 3)
    for key in ("score_rate", "win_rate"):
        assert fast[key] == pytest.approx(naive[key], abs=1e-12)


def test_resampling_conversations_widens_the_interval_of_correlated_votes() -> None:
    # 10 conversations of 10 votes each, all votes in a conversation alike: 10 independent units, not 100
    scores = [float(c % 2) for c in range(10) for _ in range(10)]
    clusters = [f"c{c}" for c in range(10) for _ in range(10)]
    by_conversation = cluster_bootstrap(scores, clusters, 2000, seed=0)["score_rate"]
    by_vote = cluster_bootstrap(scores, [str(i) for i in range(100)], 2000, seed=0)["score_rate"]
    assert by_conversation[1] - by_conversation[0] > 2 * (by_vote[1] - by_vote[0])


def test_cohen_kappa_by_hand_and_as_scikit_learn() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    rng = np.random.default_rng(0)
    x = list(rng.choice(["left", "right", "tie", "both_bad"], 40))
    y = [v if rng.random() < 0.6 else "tie" for v in x]
    assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y), abs=1e-12)
    assert cohen_kappa(["tie", "tie"], ["tie", "tie"]) is None  # chance agreement 1: undefined


def test_fleiss_kappa_of_the_published_example() -> None:
    # Fleiss (1971) as in Wikipedia's worked example: 10 subjects, 14 raters, 5 categories; P̄ = 0.378,
    # P̄e = 0.213, κ = 0.210
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    p_bar = (sum(sum(c * c for c in row) - 14 for row in table) / (14 * 13)) / 10
    shares = [sum(row[j] for row in table) / 140 for j in range(5)]
    pe = sum(s * s for s in shares)
    assert fleiss_kappa(table) == pytest.approx((p_bar - pe) / (1 - pe), abs=1e-12)
    assert round(fleiss_kappa(table), 3) == 0.210
    # two raters: Fleiss' κ is Scott's π, (p_o − p_e)/(1 − p_e) with pooled shares: 3 items agree of 4,
    # pooled shares L 5/8, R 3/8 → p_e = 34/64, π = (3/4 − 34/64)/(1 − 34/64) = 7/15
    assert fleiss_kappa([[2, 0], [0, 2], [2, 0], [1, 1]]) == pytest.approx(7 / 15, abs=1e-12)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa([[2, 0], [1, 2]])


def test_krippendorff_alpha_of_the_published_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal data with missing values:
    # 4 observers, 12 units, α = 0.743
    none = None
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, none, none, none],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, none, 3],
        [none, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, none],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, none],
    ]
    units = [[v for v in unit if v is not None] for unit in zip(*observers, strict=True)]
    assert round(krippendorff_alpha(units), 3) == 0.743
    # by hand: units (a, a), (a, b): coincidences o_aa = 2, o_ab = o_ba = 1; n_a = 3, n_b = 1, n = 4;
    # α = 1 − (n − 1)·2 / (2·n_a·n_b) = 1 − 3·2/6 = 0
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b"]]) == pytest.approx(0.0)
    assert krippendorff_alpha([["a", "a"], ["b", "b"]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["a", "a"]]) is None  # one value only: undefined


def test_agreement_reports_every_coefficient_or_says_why_not() -> None:
    votes = {
        1: {"x": "left", "y": "left"},
        2: {"x": "right", "y": "tie"},
        3: {"x": "tie", "y": "tie"},
        4: {"x": "left"},
    }
    got = agreement(votes)
    assert got["available"] and got["items"] == 3 and got["annotators"] == 2
    assert got["percent_agreement"] == pytest.approx(2 / 3)
    assert got["cohen_kappa"] == [
        {
            "annotators": ["x", "y"],
            "items": 3,
            "kappa": pytest.approx(cohen_kappa(["left", "right", "tie"], ["left", "tie", "tie"])),
        }
    ]
    assert got["krippendorff_alpha"] == pytest.approx(
        krippendorff_alpha([["left", "left"], ["right", "tie"], ["tie", "tie"]])
    )
    assert got["fleiss_items"] == 3 and got["fleiss_votes_per_item"] == 2
    one = agreement({1: {"x": "left"}, 2: {"x": "tie"}})
    assert one == {"available": False, "reason": "only 1 annotator voted (x): agreement needs two"}
    apart = agreement({1: {"x": "left"}, 2: {"y": "tie"}})
    assert apart["available"] is False and "no item has votes from two annotators" in apart["reason"]


def test_position_bias_is_an_exact_binomial_test() -> None:
    got = position_bias(["left"] * 8 + ["right"] * 2 + ["tie", "both_bad"])
    # P(X ≥ 8 or X ≤ 2 | n = 10, p = ½) = 2·(45 + 10 + 1)/1024
    assert got == {"decisive": 10, "left": 8, "left_share": 0.8, "p_value": 2 * 56 / 1024}
    assert position_bias(["tie"])["left_share"] is None


def test_bradley_terry_recovers_the_odds() -> None:
    # a beats b 3 times in 4: P = σ(θa − θb) = ¾ → θa − θb = ln 3, centred ± ln 3 / 2
    got = bradley_terry(["a", "b"], [("a", "b", 1.0)] * 3 + [("a", "b", 0.0)])
    assert got["a"] == pytest.approx(math.log(3) / 2, abs=1e-5)
    assert got["b"] == pytest.approx(-math.log(3) / 2, abs=1e-5)
    # ties are half a win each: two ties and a win for c over d equal 2 wins in 3
    ties = bradley_terry(["c", "d"], [("c", "d", 0.5), ("c", "d", 0.5), ("c", "d", 1.0)])
    assert ties["c"] - ties["d"] == pytest.approx(math.log(2), abs=1e-5)
