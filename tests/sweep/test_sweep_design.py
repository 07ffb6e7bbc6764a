"""The sweep spec: exact grid enumeration, point configs, base identity, bad-input messages."""

import math

import pytest

from almr.config import AlmrConfig, load_config
from almr.errors import ConfigError
from almr.sweep import design


def test_grid_enumerates_exactly_the_7x7_points() -> None:
    sweep = load_config(None, ["sweep.almr.low=0.0", "sweep.almr.high=0.9", "sweep.lr.low=1e-5",
                               "sweep.lr.high=1e-2"]).sweep  # fmt: skip
    points = design.grid_points(sweep)
    assert len(points) == 49 == len(set(points))
    almrs = sorted({a for a, _ in points})
    lrs = sorted({lr for _, lr in points})
    assert almrs == pytest.approx([0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9], abs=1e-12)
    assert lrs == pytest.approx([10**e for e in (-5, -4.5, -4, -3.5, -3, -2.5, -2)], rel=1e-11)
    assert points[:7] == [(0.0, lr) for lr in lrs]  # ALMR-major


def test_grid_uses_explicit_values_and_linear_lr_when_asked() -> None:
    sweep = load_config(None, ["sweep.almr.values=[0.5, 0.2]", "sweep.lr.values=[3e-4, 1e-4, 2e-4]"]).sweep
    assert design.grid_points(sweep) == [(a, lr) for a in (0.2, 0.5) for lr in (1e-4, 2e-4, 3e-4)]
    linear = load_config(None, ["sweep.lr_log=false", "sweep.grid_lr=3", "sweep.lr.low=1e-4",
                                "sweep.lr.high=3e-4"]).sweep  # fmt: skip
    assert design.axis_values(linear, "lr") == pytest.approx([1e-4, 2e-4, 3e-4])


def test_point_config_changes_only_the_swept_keys_and_keeps_the_identity() -> None:
    base = load_config(None, ["mixture.almr=0.3", "cpt.seed=5", "sweep.parallel=3"])
    point = design.point_config(base, 0.7, 2e-4, "/tmp/x")
    assert (point.mixture.almr, point.cpt.optimizer.lr, point.cpt.run_dir) == (0.7, 2e-4, "/tmp/x")
    assert point.cpt.seed == 5 and point.sweep.parallel == 1  # the sweep section is not the run's business
    assert design.base_hash(point) == design.base_hash(base)
    assert design.base_hash(load_config(None, ["cpt.seed=6"])) != design.base_hash(base)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["sweep.almr.low=0.8", "sweep.almr.high=0.2"], ["sweep.almr", "low 0.8 must be below high 0.2"]),
        (["sweep.almr.low=0.5", "sweep.almr.high=0.5"], ["sweep.almr", "empty"]),
        (["sweep.almr.high=1.2"], ["sweep.almr", "inside [0, 1]"]),
        (["sweep.lr.low=0"], ["sweep.lr", "positive"]),
        (["sweep.lr.low=-1e-4"], ["sweep.lr", "positive"]),
        (["sweep.lr.values=[1e-2]"], ["sweep.lr.values", "outside"]),
        (["sweep.grid_almr=1"], ["sweep.grid_almr", "at least 2"]),
        (["sweep.almr.values=[0.5]"], ["sweep.almr.values", "at least 2"]),
        (["sweep.design=adaptive", "sweep.n_initial=20", "sweep.max_runs=10"], ["sweep.n_initial", "max_runs"]),
        (["sweep.design=bayes"], ["sweep.design"]),
    ],
)
def test_bad_specs_are_refused_naming_the_key(overrides: list[str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    for name in names:
        assert name in str(err.value)


def test_adaptive_space_is_uniform_in_almr_and_log_uniform_in_lr() -> None:
    sweep = AlmrConfig().sweep.model_copy(update={"design": "adaptive"})
    dists = design.distributions(sweep)
    assert dists["lr"].log and not dists["almr"].log
    assert (dists["almr"].low, dists["almr"].high) == (0.1, 0.9)
    assert math.isclose(dists["lr"].low, 1e-5)
