"""`almr frontier SWEEP_DIR` and the recommendation on synthetic sweep directories."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from almr.cli import app
from almr.config import AlmrConfig
from almr.errors import AlmrError
from almr.frontier.config import FrontierConfig
from almr.frontier.recommend import Recommender
from almr.frontier.runs import load_baseline
from almr.sweep.launch import FunctionLauncher
from almr.sweep.study import run_sweep
from fake_runs import KEYS, Surface, fake_run
from synthetic_records import paper_like_losses, ridge_metric, synthetic_sweep

ALMRS = [0.1, 0.3, 0.5, 0.7, 0.9]
LRS = list(10 ** np.linspace(-5, -3, 5))
FAST = [
    "frontier.grid_size=21", "frontier.n_bootstrap=4", "frontier.n_posterior_samples=200",
    "frontier.dcpt_starts=4", "frontier.n_restarts_optimizer=0",
]  # fmt: skip


def write_sweep(path, **kw):
    losses, base = paper_like_losses(1e6)
    records = synthetic_sweep(ALMRS, LRS, ridge_metric(-4.6, 1.2), losses, base, **kw)
    for r in records:
        r.save(path / "runs" / r.run_id)
    return records


def run_cli(*args):
    result = CliRunner().invoke(app, ["frontier", *map(str, args)])
    return result


def test_cli_writes_report_json_and_figures(tmp_path):
    sweep = tmp_path / "sweep"
    write_sweep(sweep, failed=[7])
    out = tmp_path / "out"
    args = [a for s in FAST for a in ("--set", s)]
    result = run_cli(sweep, "--out", out, *args, "--set", "frontier.epsilon=0.05")
    assert result.exit_code == 0, result.output
    assert "recommended ALMR" in result.output
    for name in ("report.md", "frontier.json", "fig1_frontier.png", "fig2_trajectories.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "fig1_frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "frontier.json").read_text())
    assert summary["counts"]["completed"] == 24 and summary["counts"]["failed"] == 1
    assert [e["run_id"] for e in summary["excluded"]] == ["run-07"]
    rec = summary["recommendation"]
    assert rec["val_loss"]["en"]["mean"] <= summary["baseline"]["val_loss"]["en"] + 0.05
    assert 0.0 <= rec["prob_best_within_radius"] <= 1.0
    lin = summary["metric_frontier"]["forms"]["linear"]["coef"]
    assert abs(lin["b"] - 1.2) < 0.35 and abs(lin["a"] + 4.6) < 0.2
    assert set(summary["baselines"]["dcpt"]) == {"zh", "en"}
    # the trade-off the paper describes: Chinese loss falls, English loss rises with the ALMR
    assert summary["tradeoff"]["val_loss:zh"]["spearman_almr"] < 0 < summary["tradeoff"]["val_loss:en"]["spearman_almr"]
    report = (out / "report.md").read_text()
    assert "run-07 (ALMR 0.3" in report and "CUDA out of memory" in report
    assert f"{lin['b']:.3f}" in report and "Critical Mixture Ratio" in report
    assert "includes 0" not in report  # a slope of 1.2 is determined by these runs
    assert "step 0" in report  # where the baseline came from


def test_the_report_says_when_the_runs_do_not_determine_the_frontier_slope(tmp_path):
    sweep = tmp_path / "flat"
    losses, base = paper_like_losses(1e6)
    # the best LR does not depend on the ALMR (b = 0), and the metric is noisy
    records = synthetic_sweep(ALMRS, LRS, ridge_metric(-4.0, 0.0), losses, base, metric_noise=1.5, seed=3)
    for r in records:
        r.save(sweep / "runs" / r.run_id)
    out = tmp_path / "out"
    fast = [a for s in FAST if "n_bootstrap" not in s for a in ("--set", s)]
    result = run_cli(sweep, "--out", out, *fast, "--set", "frontier.n_bootstrap=40")
    assert result.exit_code == 0, result.output
    ci = json.loads((out / "frontier.json").read_text())["metric_frontier"]["forms"]["linear"]["ci95"]
    assert ci["b"][0] < 0 < ci["b"][1]
    assert "The interval of b includes 0: these runs do not tell" in (out / "report.md").read_text()


def test_cli_refuses_mixed_studies_and_too_few_runs(tmp_path):
    sweep = tmp_path / "mixed"
    records = write_sweep(sweep)
    records[2].base_hash = "another"
    records[2].save(sweep / "runs" / records[2].run_id)
    result = run_cli(sweep, "--set", "frontier.n_bootstrap=0")
    assert result.exit_code != 0 and "different base configs" in str(result.exception)

    few = tmp_path / "few"
    write_sweep(few, failed=list(range(4, 25)))
    result = run_cli(few)
    assert isinstance(result.exception, AlmrError)
    assert "needs at least 6 completed runs, has 4 (21 excluded" in str(result.exception)

    result = run_cli(tmp_path / "nowhere")
    assert isinstance(result.exception, AlmrError) and "no runs/ folder" in str(result.exception)


def test_recommendation_respects_the_forgetting_budget():
    losses, base = paper_like_losses(1e6)
    records = synthetic_sweep(ALMRS, LRS, ridge_metric(-4.6, 1.2, almr_peak=0.9, curvature=2.0), losses, base)
    baseline = load_baseline(None, records)
    free = Recommender(grid_size=21, n_samples=300, random_state=0).fit(records, baseline)
    # unconstrained, the metric prefers high ALMRs, where English forgets most
    assert free.almr_ > 0.7
    tight = Recommender(epsilon=0.0, grid_size=21, n_samples=300, random_state=0).fit(records, baseline)
    en = tight.loss_surface_.predict(tight.almr_, tight.lr_)
    assert en <= base["en"] + 1e-12 and tight.almr_ < free.almr_
    assert tight.metric_mean_ <= free.metric_mean_
    with pytest.raises(AlmrError, match="needs the base model's en validation loss"):
        Recommender(epsilon=0.05).fit(records, None)


def test_probability_of_best_reflects_the_noise():
    losses, base = paper_like_losses(1e6)
    kw = {"grid_size": 21, "n_samples": 400, "random_state": 0}
    metric = ridge_metric(-4.6, 1.2, curvature=30.0)  # one clear peak at ALMR 0.5, log10 LR -4.0
    clear = Recommender(**kw).fit(synthetic_sweep(ALMRS, LRS, metric, losses, base, metric_noise=0.05, seed=1))
    noisy = Recommender(**kw).fit(synthetic_sweep(ALMRS, LRS, metric, losses, base, metric_noise=4.0, seed=1))
    assert clear.almr_ == pytest.approx(0.5, abs=0.05) and np.log10(clear.lr_) == pytest.approx(-4.0, abs=0.15)
    assert clear.prob_best_ > 0.75 and noisy.prob_best_ < clear.prob_best_ - 0.3
    width = lambda r: np.ptp(r.credible_["almr"])  # noqa: E731
    assert width(noisy) > width(clear)


def test_frontier_config_defaults():
    cfg = FrontierConfig()
    assert cfg.epsilon is None and cfg.min_runs == 6 and "linear" in cfg.forms


def test_frontier_reads_a_directory_written_by_almr_sweep(tmp_path):
    """Interface check with almr.sweep: its records, its baseline.json, its failed-run errors."""
    surface = Surface(a=-3.5, b=0.5, width=0.5, peak=0.5, spread=0.4, height=12.0, tilt=1.0)
    raw = {
        "mixture": {"almr": 0.5}, "cpt": {"probe": {"every_tokens": 25_000}}, "eval": {"average": list(KEYS)},
        "sweep": {"almr": {"values": [0.1, 0.5, 0.9]}, "lr": {"values": [1e-5, 1e-4, 1e-3], "low": 1e-5, "high": 1e-2},
                  "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.01},
    }  # fmt: skip
    run = fake_run(surface, fail=lambda almr, lr: almr == 0.5 and lr == 1e-5)
    run_sweep(AlmrConfig.model_validate(raw), FunctionLauncher(run))
    result = run_cli(tmp_path / "sweep", *[a for s in FAST for a in ("--set", s)], "--set", "frontier.epsilon=0.2")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "sweep" / "frontier" / "frontier.json").read_text())
    assert summary["baseline"]["source"].endswith("baseline.json")
    assert summary["counts"] == {"completed": 8, "failed": 1, "pruned": 0, "pending": 0, "running": 0}
    assert "synthetic failure" in summary["excluded"][0]["reason"]
    assert "excluded r" in result.output
