import json
from pathlib import Path

import pytest
from rich.console import Console

from almr.config import AlmrConfig
from almr.errors import ConfigError
from almr.sweep.records import load_records
from worlds import SMALL_WORLD


@pytest.mark.slow
def test_demo_runs_every_stage_on_a_small_world(tmp_path: Path) -> None:
    """The demo preset, shrunk: a small world, a short base pretraining, an evaluation, a 3 × 2 grid
    of tiny CPT runs as subprocesses and the frontier analysis of them."""
    import torch

    from almr.config import load_config
    from almr.pipeline import run_demo

    torch.set_num_threads(1)
    world = [f"world.{k}={v}" for k, v in SMALL_WORLD.model_dump().items() if k != "model"]
    config = load_config("demo", [
        *world, "base.tokens=24576", "base.probe_every_tokens=8192",
        "base.schedule.warmup_steps=1", "eval.limit=4",
        "cpt.total_tokens=8192", "cpt.validation.every_steps=1", "cpt.probe.every_tokens=4096",
        "cpt.schedule.warmup_steps=0", "eval.probe.items_per_task=8",
        "sweep.design=grid", "sweep.almr.values=[0.1, 0.5, 0.9]", "sweep.lr.values=[0.001, 0.003]",
        "frontier.n_bootstrap=5", "frontier.n_posterior_samples=50", "frontier.grid_size=11",
        "frontier.dcpt_starts=2", "frontier.n_restarts_optimizer=0",
    ])  # fmt: skip
    console = Console(file=open(tmp_path / "console.txt", "w"), width=200)  # noqa: SIM115
    report = run_demo(tmp_path / "demo", config, console).read_text()
    for heading in ("## 1. The demo world", "## 2. The base model", "## 3. Evaluation (world suite)",
                    "## 4. The ALMR × LR study"):  # fmt: skip
        assert heading in report
    assert "| zh | zh | text | train | 400 |" in report  # the world's stats
    assert "| base |" in report  # the evaluation table's row
    events = (tmp_path / "demo/base-run/metrics.jsonl").read_text()
    assert events.count('"event": "probe"') == 4  # before the first step, then every 8192 of 24576 tokens
    assert (tmp_path / "demo/eval/base-world.json").is_file()
    records = load_records(tmp_path / "demo/sweep")
    assert sorted((r.almr, r.lr) for r in records) == [(a, lr) for a in (0.1, 0.5, 0.9) for lr in (0.001, 0.003)]
    assert all(r.status == "completed" and r.tokens == 8192 for r in records)
    summary = json.loads((tmp_path / "demo/frontier/frontier.json").read_text())
    # inside the studied ranges (the grid's LR axis is log-spaced, so its ends are only ~equal to 1e-3, 3e-3)
    assert 0.1 <= summary["recommendation"]["almr"] <= 0.9
    assert 0.001 * (1 - 1e-9) <= summary["recommendation"]["lr"] <= 0.003 * (1 + 1e-9)


def test_probe_needs_a_world(tmp_path: Path) -> None:
    from almr.evaluate.probe import probe_from_config

    config = AlmrConfig(cpt={"probe": {"every_tokens": 1000}})
    with pytest.raises(ConfigError, match=r"eval\.data_dir"):
        probe_from_config(config.eval, tokenizer=None)
