import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from almr.config import AlmrConfig
from almr.errors import ConfigError
from almr.sweep.records import load_records
from worlds import SMALL_WORLD

STAGES = ("world", "base", "study", "frontier", "cpt", "sft", "dpo", "empathy", "baselines", "eval", "ablation",
          "pairwise", "report")  # fmt: skip
SMALL = [
    *(f"world.{k}={v}" for k, v in SMALL_WORLD.model_dump().items() if k != "model"),
    "base.tokens=24576", "base.probe_every_tokens=8192", "base.schedule.warmup_steps=1", "eval.limit=4",
    "cpt.total_tokens=8192", "cpt.validation.every_steps=1", "cpt.probe.every_tokens=4096",
    "cpt.schedule.warmup_steps=0", "eval.probe.items_per_task=8",
    "sweep.n_initial=4", "sweep.max_runs=6", "sweep.parallel=2",
    "frontier.n_bootstrap=5", "frontier.n_posterior_samples=50", "frontier.grid_size=11",
    "frontier.dcpt_starts=2", "frontier.n_restarts_optimizer=0",
    "sft.steps=4", "dpo.steps=3", "empathy.steps=3", "pipeline.zh_questions=4", "pipeline.zh_new_tokens=8",
    "pipeline.pairwise_dialogues=4", "pairwise.max_new_tokens=8",
]  # fmt: skip


@pytest.mark.slow
def test_almr_run_makes_every_stage_and_table_on_a_small_world(tmp_path: Path) -> None:
    """The demo preset, shrunk: every stage of `almr run` on a small world, then a rerun that skips all."""
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "almr.cli", "run", "demo", "--out", str(out),
               *(arg for s in SMALL for arg in ("--set", s))]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in STAGES:
        record = json.loads((out / stage / "stage.json").read_text())
        assert record["status"] == "done" and record["seconds"] > 0, stage
        assert f"{stage}: started" in first.stdout
    assert "Loading weights" not in first.stdout + first.stderr  # third-party output stays in the logs
    records = load_records(out / "study" / "sweep")
    assert len(records) == 6 and all(r.status == "completed" and r.tokens == 8192 for r in records)
    choice = json.loads((out / "cpt" / "choice.json").read_text())
    summary = json.loads((out / "frontier" / "frontier.json").read_text())
    assert choice == {"almr": summary["recommendation"]["almr"], "lr": summary["recommendation"]["lr"]}
    labels = ("base", "cpt", "cpt-fixed", "instruct", "c-sft", "c-dpo", "c-sft-empathy")
    assert all((out / "eval" / f"{label}.json").is_file() for label in labels)
    shares = json.loads((out / "eval" / "chinese_share.json").read_text())
    assert set(shares) == set(labels) and all(0.0 <= v <= 1.0 for v in shares.values())
    report = json.loads((out / "pairwise" / "pairwise_report.json").read_text())
    assert set(report["models"]) == {"c-sft-empathy", "c-dpo", "instruct"}
    judged = report["judges"]["world-rule"]  # the world's judge gives a verdict on every item
    assert judged["votes"] == report["items"] == sum(p["n"] for p in judged["pairs"])
    text = (out / "report" / "report.md").read_text()
    for heading in ("Table 1", "Table 4", "Table 5", "Table 6", "Table 7", "Table 8"):
        assert heading in text, heading
    assert (out / "report" / "report.html").is_file()

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("done, skipped") == len(STAGES)


def test_probe_needs_a_world(tmp_path: Path) -> None:
    from almr.evaluate.probe import probe_from_config

    config = AlmrConfig(cpt={"probe": {"every_tokens": 1000}})
    with pytest.raises(ConfigError, match=r"eval\.data_dir"):
        probe_from_config(config.eval, tokenizer=None)
