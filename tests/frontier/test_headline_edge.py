"""A recommendation on the edge of the studied box says so in the headline, with the next study's range."""

from typing import Any

import pytest

from almr.frontier.report import box_edges, headline


def summary(almr: float, lr: float, almr_box: tuple[float, float] = (0.1, 0.9)) -> dict[str, Any]:
    return {
        "box": {"almr": list(almr_box), "lr": [3e-4, 3e-3]},
        "metric_frontier": {"forms": {"linear": {"coef": {"a": -2.4, "b": -0.6}}}},
        "recommendation": {"almr": almr, "lr": lr, "metric": {"mean": 71.8, "std": 0.9},
                           "prob_best_within_radius": 0.36},
    }  # fmt: skip


def test_a_pick_inside_the_box_has_no_edge_clause() -> None:
    s = summary(0.5, 1e-3)
    assert box_edges(s) == []
    assert headline(s).endswith("frontier log10 LR* = -2.400 − 0.600·ALMR")


def test_a_pick_at_the_top_lr_proposes_a_range_a_decade_higher() -> None:
    # 10^(-3.523 + 0.9) = 2.38e-3: exactly a tenth of the log range below the top, as the demo's 41-point grid puts it
    s = summary(0.5, 3e-4 * 10**0.9)
    assert box_edges(s) == [{"axis": "lr", "side": "high", "studied": [3e-4, 3e-3], "next": [3e-4, 3e-3 * 10]}]
    assert headline(s).endswith("; on the edge of the studied box: LR at the top of the studied [0.0003, 0.003]: the "
                                "best may lie beyond it; next study LR [0.0003, 0.03]")  # fmt: skip
    assert box_edges(summary(0.5, 3e-4 * 10**0.89)) == []


def test_almr_edges_extend_within_zero_and_one() -> None:
    low = box_edges(summary(0.1, 1e-3))
    assert low == [{"axis": "almr", "side": "low", "studied": [0.1, 0.9], "next": [0.0, 0.9]}]
    high = box_edges(summary(0.6, 1e-3, almr_box=(0.2, 0.6)))
    assert high[0]["next"] == [0.2, 1.0]
    at_limit = summary(1.0, 3e-4, almr_box=(0.5, 1.0))
    edges = box_edges(at_limit)
    assert [(e["axis"], e["side"]) for e in edges] == [("almr", "high"), ("lr", "low")]
    assert edges[0]["next"] is None and edges[1]["next"] == pytest.approx([3e-5, 3e-3])
    assert "ALMR at the top of the studied [0.5, 1], which is ALMR's own limit" in headline(at_limit)
