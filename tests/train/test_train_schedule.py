"""The LR schedule: known values at the warmup and decay boundaries, and its invariants."""

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from almr.errors import ConfigError
from almr.train.config import ScheduleConfig
from almr.train.schedule import lr_at, lr_factor


def sched(**kw: object) -> ScheduleConfig:
    return ScheduleConfig(**kw)


def test_linear_warmup_and_decay_boundaries() -> None:
    s = sched(kind="linear", warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_factor(i, 14, s) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]  # warmup ends at the peak
    assert lr_factor(4, 14, s) == 1.0  # first decay step still at the peak
    assert lr_factor(9, 14, s) == pytest.approx(0.1 + 0.9 * (1 - 5 / 9))
    assert lr_factor(13, 14, s) == pytest.approx(0.1)  # the last step reaches min_lr
    assert lr_at(13, 14, 3e-5, s) == pytest.approx(3e-6)


def test_no_warmup_starts_at_peak() -> None:
    s = sched(kind="linear")
    assert lr_factor(0, 5, s) == 1.0
    assert [lr_factor(i, 5, s) for i in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_cosine_midpoint_and_end() -> None:
    s = sched(kind="cosine", warmup_steps=2, min_lr_ratio=0.0)
    assert lr_factor(1, 12, s) == 1.0
    assert lr_factor(2, 12, s) == 1.0
    assert lr_factor(2 + 9 // 2, 12, s) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 9)))
    assert lr_factor(11, 12, s) == pytest.approx(0.0, abs=1e-12)


def test_wsd_stable_then_decays_in_the_last_fraction() -> None:
    s = sched(kind="wsd", warmup_steps=2, decay_fraction=0.2, min_lr_ratio=0.0)
    # 20 steps: warmup 0-1, stable 2-15, decay 16-19 (4 steps) ending at 0
    assert [lr_factor(i, 20, s) for i in (0, 1, 2, 15)] == [0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(i, 20, s) for i in (16, 17, 18, 19)] == pytest.approx([0.75, 0.5, 0.25, 0.0])


def test_warmup_must_leave_steps() -> None:
    with pytest.raises(ConfigError, match="warmup_steps=5"):
        lr_factor(0, 5, sched(warmup_steps=5))


@given(
    kind=st.sampled_from(["linear", "cosine", "wsd"]),
    total=st.integers(1, 300),
    warmup_share=st.floats(0, 0.99),
    floor=st.floats(0, 1),
    decay=st.floats(0.01, 1),
)
def test_factor_stays_between_zero_and_peak_and_never_rises_after_warmup(
    kind: str, total: int, warmup_share: float, floor: float, decay: float
) -> None:
    s = sched(kind=kind, warmup_steps=int(warmup_share * total), min_lr_ratio=floor, decay_fraction=decay)
    values = [lr_factor(i, total, s) for i in range(total)]
    assert all(0 < v <= 1 + 1e-12 or (v >= 0 and floor == 0) for v in values)
    after = values[s.warmup_steps :]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(after))
    assert values[-1] == pytest.approx(floor if total - s.warmup_steps > 1 else 1.0)
