"""Frontier estimators on synthetic sweeps whose answer is known (tests/synthetic_records.py)."""

import numpy as np
import pytest

from almr.errors import AlmrError, DataError
from almr.frontier.baselines import DCPTLaw, critical_mixture_ratio, dcpt_points
from almr.frontier.frontier import LossFrontier, MetricFrontier, fit_form, gradient_path, select_form
from almr.frontier.plots import probe_trajectory
from almr.frontier.runs import load_baseline, sweep_arrays
from almr.frontier.surface import GPSurface
from almr.sweep.records import RunRecord
from synthetic_records import dcpt_loss, paper_like_losses, ridge_metric, synthetic_sweep

ALMRS = [0.1, 0.3, 0.5, 0.7, 0.9]
LRS = list(10 ** np.linspace(-5, -3, 6))
A_TRUE, B_TRUE = -4.6, 1.2


def sweep(metric=None, losses=None, **kw):
    default_losses, base = paper_like_losses(1e6)
    return synthetic_sweep(ALMRS, LRS, metric or ridge_metric(A_TRUE, B_TRUE), losses or default_losses, base, **kw)


# --------------------------------------------------------------------------- metric frontier


@pytest.fixture(scope="module")
def metric_frontier():
    return MetricFrontier(grid_size=31, n_bootstrap=12, random_state=0).fit(sweep(failed=[3, 17]))


def test_metric_frontier_recovers_slope_and_intercept(metric_frontier):
    a, b = metric_frontier.coef_
    # ridge half-width 0.5 decade, runs every 0.4 decade, metric noise 0.2 on a 12-point peak
    assert abs(a - A_TRUE) < 0.1
    assert abs(b - B_TRUE) < 0.15
    lo, hi = metric_frontier.coef_ci_["linear"].T
    assert np.all(lo <= hi)
    band = metric_frontier.band_["linear"]
    assert np.all(band["lo"] <= band["hi"] + 1e-12)
    # the line's prediction at the ends of the ALMR range
    np.testing.assert_allclose(np.log10(metric_frontier.predict_lr([0.1, 0.9], "linear")),
                               [A_TRUE + 0.1 * B_TRUE, A_TRUE + 0.9 * B_TRUE], atol=0.12)  # fmt: skip


def test_metric_frontier_selects_the_form_by_leave_one_out(metric_frontier):
    fits = metric_frontier.forms_
    assert set(fits) == {"linear", "quadratic", "log"}
    best = min(f.loo_rmse for f in fits.values())
    assert fits[metric_frontier.form_].loo_rmse == best
    # the truth is a straight line: the log form fits it worse than the line
    assert fits["log"].loo_rmse > fits["linear"].loo_rmse


def test_form_selection_finds_a_curved_frontier():
    r = np.linspace(0.1, 0.9, 7)
    y = -4.0 + 0.5 * np.log(r)
    fits = {name: fit_form(name, r, y) for name in ("linear", "quadratic", "log")}
    assert select_form(fits) == "log"
    np.testing.assert_allclose(fits["log"].coef, [-4.0, 0.5], atol=1e-9)
    assert fit_form("log", np.array([0.0, 0.5, 1.0]), y[:3]) == "needs every ALMR > 0"


def test_metric_frontier_peak_and_failed_runs(metric_frontier):
    excluded = {e.run_id: e for e in metric_frontier.excluded_}
    assert set(excluded) == {"run-03", "run-17"}
    assert excluded["run-03"].status == "failed" and "out of memory" in excluded["run-03"].reason
    assert "run-03" not in metric_frontier.run_ids_ and len(metric_frontier.run_ids_) == 28
    # the true surface peaks at ALMR 0.5 on the ridge; the best peak is near it
    peak = metric_frontier.peaks_[0]
    assert abs(peak["almr"] - 0.5) < 0.15
    assert abs(np.log10(peak["lr"]) - (A_TRUE + B_TRUE * peak["almr"])) < 0.2


def test_a_failed_run_is_not_scored_zero():
    records = sweep(failed=[0])
    records[0].averaged_metric = 0.0  # a failed run carrying a number must still not enter the fit
    data = sweep_arrays(records, "metric")
    assert 0.0 not in data.y and len(data.y) == len(records) - 1


# --------------------------------------------------------------------------- loss frontier


def test_gradient_path_follows_the_analytic_curve_of_a_quadratic():
    x0, h = np.array([0.3, 0.8]), np.array([2.0, 6.0])

    def grad(x):
        return h * (x - x0)

    start = np.array([0.9, 0.1])
    path, why = gradient_path(grad, start)
    assert why == "stationary"
    np.testing.assert_allclose(path[-1], x0, atol=1e-3)
    # dx/dt = −H(x − x0) ⇒ (v − v0) = (v_s − v0) · ((u − u0)/(u_s − u0))^(h_v/h_u)
    u, v = path[:, 0], path[:, 1]
    ratio = np.clip((u - x0[0]) / (start[0] - x0[0]), 0.0, None)
    expected = x0[1] + (start[1] - x0[1]) * ratio ** (h[1] / h[0])
    np.testing.assert_allclose(v, expected, atol=1e-4)
    _up, why_up = gradient_path(grad, start, ascend=True)
    assert why_up == "boundary"


def test_loss_frontier_direction_on_a_fitted_quadratic():
    # L = 3 + 0.8(u − 0.7)² + 0.5(v − 0.2)² on the scaled plane; at the centre −∇L ∝ (−0.8·2·(−0.2), −0.5·2·0.3)
    def loss(r, x, D):
        u, v = (r - 0.1) / 0.8, (x + 5) / 2
        return 3 + 0.8 * (u - 0.7) ** 2 + 0.5 * (v - 0.2) ** 2

    records = sweep(losses={"en": loss, "zh": loss}, n_history=1, loss_noise=1e-5)
    lf = LossFrontier(source="en", random_state=0).fit(records)
    g = np.array([2 * 0.8 * (0.5 - 0.7), 2 * 0.5 * (0.5 - 0.2)])
    np.testing.assert_allclose(lf.direction_, -g / np.linalg.norm(g), atol=0.02)
    # slope in natural units: d log10 LR / d ALMR = d_v · 2 / (d_u · 0.8)
    assert lf.slope_ == pytest.approx((-g[1] * 2) / (-g[0] * 0.8), rel=0.05)
    assert lf.descent_stop_ == "stationary"
    end = lf.path_["almr"][-1], np.log10(lf.path_["lr"][-1])
    assert end[0] == pytest.approx(0.1 + 0.8 * 0.7, abs=0.02) and end[1] == pytest.approx(-5 + 2 * 0.2, abs=0.05)


# --------------------------------------------------------------------------- D-CPT, CMR


def test_dcpt_fit_recovers_known_parameters():
    true = {"E": 1.8, "B": 0.6, "eta": 0.5, "beta": 0.4, "C": 0.3, "gamma": 0.6}
    r = np.repeat([0.1, 0.3, 0.5, 0.7, 0.9], 8)
    D = np.tile(np.arange(1, 9) * 125_000.0, 5)
    y = dcpt_loss(r, D, **true, d_ref=1e6) * np.exp(np.random.default_rng(0).normal(0, 2e-4, len(r)))
    law = DCPTLaw(n_starts=16, random_state=0).fit(r, D, y)
    for name, value in true.items():
        assert law.params_[name] == pytest.approx(value, rel=0.05), name
    assert law.rmse_log_ < 1e-3 and law.r2_ > 0.999


def test_cmr_is_the_largest_ratio_within_tolerance():
    _, base = paper_like_losses(1e6)
    records = sweep(n_history=6, loss_noise=1e-4)
    r, D, loss = dcpt_points([x for x in records if x.lr == LRS[2]], "en", additional=False)
    law = DCPTLaw(n_starts=12, random_state=0).fit(r, D, loss)
    cmr = critical_mixture_ratio(law, 1e6, base["en"], 0.05)
    assert cmr is not None
    assert law.predict(1 - cmr, 1e6) <= base["en"] + 0.05
    assert law.predict(1 - min(cmr + 0.01, 1.0), 1e6) > base["en"] + 0.05 or cmr == 1.0
    assert critical_mixture_ratio(law, 1e6, base["en"], -10.0) is None


# --------------------------------------------------------------------------- bad input


def test_too_few_runs_says_how_many_are_needed():
    records = sweep()[:8]
    with pytest.raises(AlmrError, match="needs at least 10 completed runs, has 8"):
        MetricFrontier(min_runs=10).fit(records)


def test_too_few_almrs_is_refused():
    records = [r for r in sweep() if r.almr in (0.1, 0.3)]
    with pytest.raises(AlmrError, match="2 distinct ALMR"):
        MetricFrontier().fit(records)


def test_mixed_base_hash_is_refused():
    records = sweep()
    records[4].base_hash = "other-study"
    with pytest.raises(DataError, match="mixes runs of 2 different base configs"):
        MetricFrontier().fit(records)


def test_baseline_from_step_zero_or_file(tmp_path):
    records = sweep()
    got = load_baseline(tmp_path, records)
    assert got is not None and "step 0" in got.source
    assert got.val_loss["en"] == pytest.approx(2.25)
    (tmp_path / "baseline.json").write_text('{"val_loss": {"en": 2.0}, "scores": {"x": 50}}')
    got = load_baseline(tmp_path, records)
    assert got.val_loss == {"en": 2.0} and got.source.endswith("baseline.json")
    (tmp_path / "baseline.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a baseline file"):
        load_baseline(tmp_path, records)


def test_surface_std_is_of_the_latent_surface():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.uniform(0, 1, 40), 10 ** rng.uniform(-5, -3, 40)])
    y = 2 * X[:, 0] + rng.normal(0, 0.3, 40)
    s = GPSurface(random_state=0).fit(X, y)
    _, std = s.predict(X[:, 0], X[:, 1], return_std=True)
    # a smooth surface seen through noise σ = 0.3: the noise is estimated, the latent std is below it
    assert 0.15 < s.noise_std_ < 0.5
    assert np.all(std < s.noise_std_)


def test_length_scales_are_bounded_below_by_the_run_spacing():
    rng = np.random.default_rng(0)

    def fitted_bounds(almrs, lrs):
        X = np.array([(a, lr) for a in almrs for lr in lrs])
        y = rng.normal(0.0, 1.0, len(X))
        return GPSurface(random_state=0).fit(X, y).kernel_.k1.k2.hyperparameter_length_scale.bounds

    # 3 values per axis: scaled gaps of 0.5, so no length scale below 0.25
    assert np.allclose(fitted_bounds([0.1, 0.5, 0.9], [3e-4, 1e-3, 3e-3]), [[0.25, 20.0], [0.25, 20.0]])
    # 7 ALMRs (gap 1/6) × 4 LRs (gap 1/3)
    bounds = fitted_bounds(np.linspace(0.1, 0.9, 7), 10 ** np.linspace(-4, -2, 4))
    assert np.allclose(bounds, [[1 / 12, 20.0], [1 / 6, 20.0]])
    # scattered points (an adaptive design): the 0.05 floor
    X = np.column_stack([rng.uniform(0, 1, 40), 10 ** rng.uniform(-4, -2, 40)])
    surface = GPSurface(random_state=0).fit(X, rng.normal(0.0, 1.0, 40))
    assert np.allclose(surface.kernel_.k1.k2.hyperparameter_length_scale.bounds, [[0.05, 20.0], [0.05, 20.0]])


def test_a_small_grid_is_not_fit_as_a_bump_at_each_run():
    # the averaged metric of the demo's 3 × 3 study (almr demo, 262,144-token runs)
    X = np.array([(a, lr) for a in (0.1, 0.5, 0.9) for lr in (3e-4, 1e-3, 3e-3)])
    y = np.array([61.0, 61.67, 62.67, 61.0, 69.0, 72.0, 62.67, 67.67, 61.67])
    loose = GPSurface(length_scale_bounds=(0.05, 20.0), random_state=0).fit(X, y)
    assert loose.length_scales_[0] < 0.06 and loose.noise_std_ < 0.01  # interpolates: a bump per run
    surface = GPSurface(random_state=0).fit(X, y)
    assert surface.length_scales_[0] == pytest.approx(0.25) and surface.noise_std_ > 0.3
    assert any("ALMR length scale at its lower bound 0.25 (half the runs' spacing" in w for w in surface.warnings_)
    assert not any("Decreasing the bound" in w and "length_scale" in w for w in surface.warnings_)


def test_fig2_trajectories_end_at_the_runs_averaged_metric():
    history = [{"tokens": 0, "scores": {"a": 10.0, "b": 20.0, "c": 90.0}},
               {"tokens": 100, "scores": {"a": 30.0, "b": 50.0, "c": 0.0}}]  # fmt: skip
    record = RunRecord(run_id="r", almr=0.5, lr=1e-3, status="completed", probe_history=history,
                       scores=history[-1]["scores"], averaged_metric=40.0, average=["a", "b"])  # fmt: skip
    assert probe_trajectory(record, None) == ([0, 100], [15.0, 40.0])  # eval.average, not every probe task
    assert probe_trajectory(record, ["c"]) == ([0, 100], [90.0, 0.0])  # frontier.metric_keys wins
    old = record.model_copy(update={"average": []})  # a record written before `average` was kept
    assert probe_trajectory(old, None)[1] == [40.0, pytest.approx(80.0 / 3)]
