"""A grid study by the losses (issue #16, item 6): runs that validate but record no benchmark
score end completed, and `almr frontier` recommends from their losses; a study that would record
neither is refused before anything is written; a run that recorded nothing fails clearly.

The fake runs' final losses (x = log10 LR) are those of tests/frontier/test_loss_only.py:
wiki_zh 3 − ALMR + 0.3·(x + 4)², web_en 1.95 + 0.5·ALMR, both from the base losses at step 0
(web_en 2.2); within the default budget (web_en ≤ 2.2 + 0.01 × 2.2) the best point is
ALMR 0.544, LR 1e-4.
"""

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from almr.config import AlmrConfig
from almr.errors import AlmrError, ConfigError
from almr.sweep.launch import FunctionLauncher, RunSpec
from almr.sweep.records import fit_ready
from almr.sweep.status import status_view
from almr.sweep.study import run_sweep

BASE = {"web_en": 2.2, "wiki_zh": 3.2}


def spec(tmp_path: Path, **cpt: object) -> AlmrConfig:
    raw = {
        "data": {"sources": [
            {"name": "web_en", "language": "en", "train": ["web_en.jsonl"], "valid": ["web_en.valid.jsonl"]},
            {"name": "wiki_zh", "language": "zh", "train": ["wiki_zh.jsonl"], "valid": ["wiki_zh.valid.jsonl"]},
        ]},
        "mixture": {"almr": 0.5},
        "cpt": {"validation": {"every_steps": 1}, **cpt},
        "sweep": {"almr": {"values": [0.1, 0.5, 0.9]}, "lr": {"values": [1e-5, 1e-4, 1e-3], "low": 1e-5, "high": 1e-2},
                  "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.01},
    }  # fmt: skip
    return AlmrConfig.model_validate(raw)


def losses(almr: float, lr: float, t: float) -> dict[str, float]:
    x = math.log10(lr)
    return {
        "web_en": 2.2 - 0.25 * math.sqrt(t) + 0.5 * almr * t,
        "wiki_zh": 3.0 - almr * math.sqrt(t) + 0.3 * (x + 4.0) ** 2 * t,
    }


def val_only_run(validate: bool = True) -> Callable[[RunSpec, Callable[[], bool]], None]:
    """A run function writing what `almr cpt` writes without a probe: train events, a val event at step 0
    and after every step (none with `validate` False), end."""

    def run(spec: RunSpec, should_stop: Callable[[], bool]) -> None:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        with (spec.run_dir / "metrics.jsonl").open("w", encoding="utf-8") as out:

            def write(event: str, **fields: object) -> None:
                out.write(json.dumps({"event": event, **fields}) + "\n")

            write("start", step=0, tokens=0, steps=6)
            if validate:
                write("val", step=0, tokens=0, loss=dict(BASE))
            for step in range(1, 7):
                write("train", step=step, tokens=step * 10_000, loss=3.0)
                if validate:
                    write("val", step=step, tokens=step * 10_000, loss=losses(spec.almr, spec.lr, step / 6))
            write("end", step=6, tokens=60_000)

    return run


def test_a_grid_study_by_the_losses_completes_and_gets_a_recommendation(tmp_path: Path) -> None:
    result = run_sweep(spec(tmp_path), FunctionLauncher(val_only_run()))
    assert len(result.records) == 9
    for r in result.records:
        assert r.status == "completed" and r.error is None and r.averaged_metric is None
        assert r.val_loss == pytest.approx(losses(r.almr, r.lr, 1.0)) and len(r.val_history) == 7
    assert result.best is None  # nothing is ranked by a metric
    assert len(fit_ready(result.records, 9, target="loss")) == 9
    with pytest.raises(AlmrError, match=r"with an averaged metric; 0 of 9.*the loss fits need validation losses only"):
        fit_ready(result.records, 6)
    with pytest.raises(AlmrError) as refused:
        fit_ready(result.records, 12, target="loss")
    assert str(refused.value) == (
        "a fit needs at least 12 completed runs with validation losses; 9 of 9 have them (0 failed; 0 pruned). "
        "Run 3 more (raise sweep.max_runs and resume the sweep) for the loss fits; the metric fits need an averaged "
        "metric, which 0 have"
    )
    # Optuna too lists every run completed, at minus its Chinese loss
    study = optuna.load_study(study_name="almr-sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    by_run = {r.run_id: r for r in result.records}
    for trial in study.trials:
        assert trial.state.name == "COMPLETE" and trial.user_attrs["objective"] == "-val_loss:wiki_zh"
        assert trial.value == pytest.approx(-by_run[trial.user_attrs["run_id"]].val_loss["wiki_zh"])
    console = Console(record=True, width=200)
    console.print(status_view(tmp_path / "sweep"))
    table = console.export_text()
    assert "9/9 runs finished (9 completed)" in table and "failed" not in table

    fast = ["frontier.n_bootstrap=0", "frontier.n_posterior_samples=200", "frontier.dcpt_starts=4",
            "frontier.n_restarts_optimizer=0"]  # fmt: skip
    cli = [sys.executable, "-m", "almr.cli", "frontier", str(tmp_path / "sweep"),
           *[a for s in fast for a in ("--set", s)]]  # fmt: skip
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "by loss (no averaged metric)" in done.stdout
    summary = json.loads((tmp_path / "sweep" / "frontier" / "frontier.json").read_text())
    rec = summary["recommendation"]
    assert summary["metric"]["present"] is False and summary["sources"]["additional"] == "wiki_zh"
    assert set(summary["baselines"]["dcpt"]) == {"wiki_zh", "web_en"}
    # even from a 3 × 3 grid: within the budget, at ALMR 0.544 (the 41-point grid's 0.54), LR 1e-4
    assert rec["val_loss"]["web_en"]["mean"] <= rec["constraint"]["limit"] == pytest.approx(2.2 * 1.01)
    assert rec["almr"] == pytest.approx(0.544, abs=0.03) and math.log10(rec["lr"]) == pytest.approx(-4.0, abs=0.1)
    assert rec["objective"]["mean"] == pytest.approx(3.0 - rec["almr"], abs=0.01)


@pytest.mark.parametrize(
    ("every_steps", "held_out", "why"),
    [
        (0, True, "cpt.validation.every_steps is 0"),
        (1, False, "no source of the mixture has held-out files in data.sources[].valid (sources: web_en, wiki_zh)"),
    ],
)
def test_a_study_that_would_record_nothing_is_refused_before_anything_is_written(
    tmp_path: Path, every_steps: int, held_out: bool, why: str
) -> None:
    config = spec(tmp_path, validation={"every_steps": every_steps})
    if not held_out:
        sources = [s.model_copy(update={"valid": []}) for s in config.data.sources]
        config = config.model_copy(update={"data": config.data.model_copy(update={"sources": sources})})
    with pytest.raises(ConfigError) as refused:
        run_sweep(config, FunctionLauncher(val_only_run()))
    message = str(refused.value)
    assert message.startswith("the study's runs would record neither a benchmark score nor a validation loss: ")
    assert f"sweep.final_eval is off and {why}. Set cpt.validation.every_steps > 0" in message
    assert "or cpt.probe.every_tokens" in message
    assert not (tmp_path / "sweep").exists()


def test_a_run_that_recorded_no_loss_and_no_score_fails_with_the_reason(tmp_path: Path) -> None:
    result = run_sweep(spec(tmp_path), FunctionLauncher(val_only_run(validate=False)))
    assert {r.status for r in result.records} == {"failed"}
    assert "ended without a validation loss, and nothing else scores it" in (result.records[0].error or "")
    study = optuna.load_study(study_name="almr-sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    assert {t.state.name for t in study.trials} == {"FAIL"}
