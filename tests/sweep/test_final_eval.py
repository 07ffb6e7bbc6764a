"""Per-run final evaluation (`sweep.final_eval`): each completed run's final checkpoint is evaluated
after training, in the run's own job; the record takes its scores and its averaged metric from
RUN/final_eval.json, the probe history stays; a failed evaluation fails the run; a final-eval suite
that cannot produce the averaged metric is refused before any run starts."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from almr.config import AlmrConfig, dump_config, load_config
from almr.errors import AlmrError, ConfigError
from almr.evaluate.config import AverageConfig
from almr.sweep.design import point_config
from almr.sweep.launch import FunctionLauncher, LocalLauncher, RunSpec
from almr.sweep.records import load_records
from almr.sweep.study import dry_run, run_sweep
from worlds import save_world_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AVERAGE = {"name": "zh-heavy", "terms": {"world_ceval": 2, "world_mmlu": 1}}
FINAL_EVAL = {"enabled": True, "tasks": ["world_ceval", "world_mmlu"], "limit": 4}


@pytest.fixture(scope="module")
def base_model(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_world_model(small_world, tmp_path_factory.mktemp("base") / "model")


def spec(tmp_path: Path, world: Path, model: Path, eval_: dict | None = None, **sweep: object) -> AlmrConfig:
    raw = {
        "model": {"name_or_path": str(model)},
        "mixture": {"almr": 0.5},
        "eval": {"data_dir": str(world), "average": AVERAGE, **(eval_ or {})},
        "sweep": {"almr": {"values": [0.2, 0.8]}, "lr": {"values": [1e-4, 1e-3], "low": 1e-5, "high": 1e-2},
                  "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.01, "final_eval": FINAL_EVAL, **sweep},
    }  # fmt: skip
    return AlmrConfig.model_validate(raw)


PROBES = [{"tokens": t, "scores": {"world_ceval": 30.0 + t / 64, "world_mmlu": 50.0}} for t in (256, 512)]


def trained(world: Path, checkpoint: bool = True) -> Callable[[RunSpec, Callable[[], bool]], None]:
    """A CPT run without the training: metrics.jsonl as `almr cpt` writes it (probes, then the end
    event at step 2) and, with `checkpoint`, a complete step-2 checkpoint whose hf/ export is the
    world's tiny model with weights drawn from the point (so each run scores differently)."""

    def run(spec: RunSpec, should_stop: Callable[[], bool]) -> None:
        events = [{"event": "start", "step": 0, "tokens": 0}, {"event": "val", "step": 0, "tokens": 0,
                  "loss": {"en": 2.0, "zh": 4.0}}]  # fmt: skip
        events += [{"event": "probe", "step": i, **p} for i, p in enumerate(PROBES, start=1)]
        events.append({"event": "end", "step": 2, "tokens": 512})
        (spec.run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        if checkpoint:
            step = spec.run_dir / "checkpoints" / "step_00000002"
            save_world_model(world, step / "hf", seed=int(spec.almr * 10) + int(spec.lr * 1e4))
            (step / "complete").write_text(json.dumps({"step": 2}))

    return run


def test_records_take_scores_and_the_weighted_metric_from_the_final_evaluation(
    tmp_path: Path, small_world: Path, base_model: Path
) -> None:
    result = run_sweep(spec(tmp_path, small_world, base_model), FunctionLauncher(trained(small_world)))
    assert sorted((r.almr, r.lr) for r in result.records) == [(0.2, 1e-4), (0.2, 1e-3), (0.8, 1e-4), (0.8, 1e-3)]
    for r in result.records:
        run_dir = tmp_path / "sweep" / "runs" / r.run_id
        raw = json.loads((run_dir / "final_eval.json").read_text())
        ceval = raw["tasks"]["world_ceval"]["metrics"]["acc"]["value"]
        mmlu = raw["tasks"]["world_mmlu"]["metrics"]["acc"]["value"]
        assert raw["model"] == str(run_dir / "checkpoints" / "step_00000002" / "hf")  # the final checkpoint
        assert raw["limit"] == 4 and [raw["tasks"][t]["n_samples"] for t in ("world_ceval", "world_mmlu")] == [4, 4]
        assert r.status == "completed" and r.error is None and r.scores_from == "final_eval"
        assert r.scores == {"world_ceval": ceval, "world_ceval:acc": ceval, "world_mmlu": mmlu, "world_mmlu:acc": mmlu}
        assert r.averaged_metric == (2 * ceval + 1 * mmlu) / 3
        assert r.average == AverageConfig(name="zh-heavy", terms={"world_ceval": 2.0, "world_mmlu": 1.0})
        assert r.probe_history == PROBES
        assert r.tokens == 512 and r.steps == 2
    study = optuna.load_study(study_name="almr-sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    assert sorted(t.value for t in study.trials) == sorted(r.averaged_metric for r in result.records)
    stored = yaml.safe_load((tmp_path / "sweep" / "sweep.yaml").read_text())  # the study keeps its metric
    assert stored["eval"]["average"] == {"name": "zh-heavy", "terms": {"world_ceval": 2.0, "world_mmlu": 1.0}}


def test_a_final_evaluation_that_fails_fails_the_run_with_its_error(
    tmp_path: Path, small_world: Path, base_model: Path
) -> None:
    result = run_sweep(spec(tmp_path, small_world, base_model), FunctionLauncher(trained(small_world, False)))
    assert [r.status for r in result.records] == ["failed"] * 4
    for r in result.records:
        run_dir = tmp_path / "sweep" / "runs" / r.run_id
        assert r.error == (
            f"final evaluation failed: AlmrError: {run_dir}: the run ended at step 2 but none is complete; "
            "resume the run to save it"
        )
        assert r.averaged_metric is None and r.scores == {} and not (run_dir / "final_eval.json").exists()
        assert len(r.probe_history) == 2  # the trajectory is kept
    study = optuna.load_study(study_name="almr-sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL"] * 4


@pytest.mark.parametrize(
    ("eval_", "final_eval", "error", "message"),
    [
        ({"average": ["world_ceval", "world_eprstmt"]}, {}, ConfigError,
         r"eval\.average: world_eprstmt is not produced by sweep\.final_eval, which runs world_ceval, world_mmlu; "
         r"add world_eprstmt to sweep\.final_eval\.tasks or leave world_eprstmt out of eval\.average"),
        ({"average": ["world_ceval:f1"]}, {}, ConfigError, r"eval\.average: world_ceval reports acc, not f1"),
        ({"average": ["world_humaneval"]}, {"tasks": ["world_humaneval"]}, ConfigError,
         r"sweep\.final_eval runs world_humaneval, which run model-written code; set eval\.allow_code_execution"),
        ({}, {"suite": "nope"}, ConfigError, r"sweep\.final_eval: unknown suite 'nope'"),
        ({"data_dir": "/nonexistent"}, {}, AlmrError, r"sweep\.final_eval \(data from eval\.data_dir=/nonexistent\)"),
    ],
)  # fmt: skip
def test_a_final_eval_that_cannot_give_the_averaged_metric_is_refused_before_any_run(
    tmp_path: Path, small_world: Path, base_model: Path, eval_: dict, final_eval: dict, error: type, message: str
) -> None:
    config = spec(tmp_path, small_world, base_model, eval_, final_eval={**FINAL_EVAL, **final_eval})
    with pytest.raises(error, match=message):
        run_sweep(config, FunctionLauncher(trained(small_world)))
    assert not (tmp_path / "sweep").exists()  # refused before anything was written


def test_chat_tasks_are_refused_for_a_base_model_without_a_chat_template(tmp_path: Path, small_world: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    config = spec(
        tmp_path, small_world, plain, {"average": ["zh_share"]}, final_eval={**FINAL_EVAL, "tasks": ["zh_share"]}
    )
    message = (
        r"sweep\.final_eval: zh_share need a chat template, which the base model .*plain \(and so each CPT "
        r"checkpoint\) lacks; use sweep\.final_eval\.suite: paper-base"
    )
    with pytest.raises(ConfigError, match=message):
        run_sweep(config, FunctionLauncher(trained(small_world)))


def test_final_eval_on_needs_a_suite_or_tasks() -> None:
    with pytest.raises(ConfigError, match=r"sweep\.final_eval: enabled without a suite or tasks; set "):
        load_config(None, ["sweep.final_eval.enabled=true"])


FAKE_TRAIN = """
import json, sys, yaml
from pathlib import Path
run = Path(yaml.safe_load(open(sys.argv[1]))["cpt"]["run_dir"])
events = [{"event": "start", "step": 0, "tokens": 0},
          {"event": "probe", "step": 1, "tokens": 100, "scores": {"world_ceval": 1.0, "world_mmlu": 2.0}},
          {"event": "end", "step": 1, "tokens": 100}]
(run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\\n" for e in events))
"""

FAKE_EVAL = """
import json, sys, yaml
from pathlib import Path
config = yaml.safe_load(open(sys.argv[1]))
almr, lr = config["mixture"]["almr"], config["cpt"]["optimizer"]["lr"]
if (almr, lr) == (0.8, 1e-3):
    print("error: data missing for world_ceval (fake)")
    sys.exit(2)
values = {"world_ceval": {0.2: 30.0, 0.8: 60.0}[almr], "world_mmlu": {1e-4: 40.0, 1e-3: 80.0}[lr]}
tasks = {t: {"family": "chinese", "title": t, "version": 1.0, "n_samples": 4, "shots": 0, "mode": "loglikelihood",
             "primary": "acc", "metrics": {"acc": {"value": v, "stderr": None, "scale": "0-100"}}}
         for t, v in values.items()}
result = {"format": "almr-eval/1", "model": "m", "suite": None, "limit": 4, "created": "now", "wall_s": 0.1,
          "lm_eval_version": "x", "almr_version": "x", "tasks": tasks}
(Path(config["cpt"]["run_dir"]) / "final_eval.json").write_text(json.dumps(result))
"""


def test_the_local_launcher_runs_training_then_the_final_evaluation(
    tmp_path: Path, small_world: Path, base_model: Path
) -> None:
    (tmp_path / "train.py").write_text(FAKE_TRAIN)
    (tmp_path / "eval.py").write_text(FAKE_EVAL)
    launcher = LocalLauncher(
        command=lambda s: [sys.executable, str(tmp_path / "train.py"), str(s.config_path)],
        final_eval=lambda s: [sys.executable, str(tmp_path / "eval.py"), str(s.config_path)],
    )
    result = run_sweep(spec(tmp_path, small_world, base_model, parallel=2), launcher)
    by_point = {(r.almr, r.lr): r for r in result.records}
    for (almr, lr), ceval, mmlu in [((0.2, 1e-4), 30.0, 40.0), ((0.2, 1e-3), 30.0, 80.0), ((0.8, 1e-4), 60.0, 40.0)]:
        r = by_point[(almr, lr)]
        assert r.status == "completed" and r.scores_from == "final_eval"
        assert r.averaged_metric == (2 * ceval + mmlu) / 3
        assert r.probe_history == [{"tokens": 100, "scores": {"world_ceval": 1.0, "world_mmlu": 2.0}}]
        log = (tmp_path / "sweep" / "runs" / r.run_id / "run.log").read_text()
        assert log.count("train.py") == 1 and log.count("eval.py") == 1  # one header line per step
    failed = by_point[(0.8, 1e-3)]
    assert failed.status == "failed" and failed.averaged_metric is None
    assert (failed.error or "").startswith("final evaluation failed: exit code 2; last lines of ")
    assert "error: data missing for world_ceval (fake)" in (failed.error or "")


def test_dry_run_shows_the_final_evaluation_command(tmp_path: Path, small_world: Path, base_model: Path) -> None:
    config = spec(tmp_path, small_world, base_model, threads_per_run=2)
    path = tmp_path / "spec.yaml"
    path.write_text(dump_config(config))
    out = subprocess.run([sys.executable, "-m", "almr.cli", "sweep", str(path), "--dry-run"], capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "almr.cli cpt" in line]
    assert len(lines) == 4
    run_config = tmp_path / "sweep" / "runs" / "r000-almr0.2000-lr1.000e-04" / "config.yaml"
    assert lines[0].endswith(
        f" && OMP_NUM_THREADS=2 {sys.executable} -m almr.cli sweep final-eval {run_config} "
        "--tasks world_ceval,world_mmlu --limit 4"
    )
    slurm = dry_run(config.model_copy(update={"sweep": config.sweep.model_copy(update={"launcher": "slurm"})}))
    assert (
        f"--no-progress $(ls {run_config.parent}/checkpoints/step_*/complete >/dev/null 2>&1 && echo --resume) && "
        f'if [ "${{SLURM_NODEID:-0}}" = 0 ]; then python -m almr.cli sweep final-eval {run_config} '
        "--tasks world_ceval,world_mmlu --limit 4; fi"
    ) in slurm[1]
    assert not (tmp_path / "sweep").exists()


def test_almr_sweep_final_eval_evaluates_a_finished_run(tmp_path: Path, small_world: Path, base_model: Path) -> None:
    config = spec(tmp_path, small_world, base_model)
    run_dir = tmp_path / "sweep" / "runs" / "r000"
    run_dir.mkdir(parents=True)
    point = point_config(config, 0.2, 1e-4, str(run_dir))
    (run_dir / "config.yaml").write_text(dump_config(point))
    trained(small_world)(RunSpec("r000", 0.2, 1e-4, run_dir, point), lambda: False)
    cli = [sys.executable, "-m", "almr.cli", "sweep", "final-eval", str(run_dir / "config.yaml")]
    refused = subprocess.run(cli, capture_output=True, text=True)
    assert refused.returncode == 2 and "pass --suite NAME or --tasks a,b" in refused.stderr
    out = subprocess.run([*cli, "--tasks", "world_ceval,world_mmlu", "--limit", "4"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    raw = json.loads((run_dir / "final_eval.json").read_text())
    ceval = raw["tasks"]["world_ceval"]["metrics"]["acc"]["value"]
    mmlu = raw["tasks"]["world_mmlu"]["metrics"]["acc"]["value"]
    assert f"| {(2 * ceval + mmlu) / 3:.1f} |" in out.stdout and f"wrote {run_dir / 'final_eval.json'}" in out.stdout


@pytest.mark.slow
def test_a_grid_of_real_cpt_runs_is_ranked_by_its_final_evaluation(
    tmp_path: Path, small_world: Path, base_model: Path
) -> None:
    """`almr sweep` as a user runs it: each local run is `almr cpt` on the demo world, then `almr sweep
    final-eval` on its final checkpoint; no probe, so every score comes from the final evaluation."""
    from almr.data.tokenize import tokenize_sources
    from almr.world.build import world_data

    data = world_data(small_world, tmp_path / "shards")
    tokenize_sources(data, progress=False, log=lambda line: None)
    raw = spec(tmp_path, small_world, base_model, parallel=2, threads_per_run=1, poll_s=0.2).model_dump(mode="json")
    raw["data"] = data.model_dump(mode="json")
    raw["mixture"] = {"additional_language": "zh", "almr": 0.5, "sub_weights": {"en": 0.74, "math": 0.13, "code": 0.13}}
    raw["cpt"] = {"batch": {"micro_batch_size": 4, "global_batch_size": 4, "seq_len": 128}, "total_tokens": 1024,
                  "schedule": {"kind": "linear", "warmup_steps": 0}, "validation": {"every_steps": 2},
                  "probe": {"every_tokens": 0}}  # fmt: skip
    path = tmp_path / "spec.yaml"
    path.write_text(dump_config(AlmrConfig.model_validate(raw)))
    out = subprocess.run([sys.executable, "-m", "almr.cli", "sweep", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    records = load_records(tmp_path / "sweep")
    assert len(records) == 4
    for r in records:
        run_dir = tmp_path / "sweep" / "runs" / r.run_id
        raw_eval = json.loads((run_dir / "final_eval.json").read_text())
        ceval = raw_eval["tasks"]["world_ceval"]["metrics"]["acc"]["value"]
        mmlu = raw_eval["tasks"]["world_mmlu"]["metrics"]["acc"]["value"]
        assert raw_eval["model"] == str(run_dir / "checkpoints" / "step_00000002" / "hf")
        assert r.status == "completed" and r.tokens == 1024 and r.scores_from == "final_eval"
        assert r.averaged_metric == (2 * ceval + 1 * mmlu) / 3 and r.probe_history == []
        assert r.val_loss.keys() == {"en", "zh", "math", "code"}
    best = max(records, key=lambda r: r.averaged_metric or 0.0)
    assert f"best: {best.run_id}" in out.stdout


def test_the_frontier_report_states_the_averaged_metric() -> None:
    from almr.frontier.analyze import analyze_records
    from almr.frontier.config import FrontierConfig
    from almr.frontier.report import markdown_report
    from synthetic_records import paper_like_losses, ridge_metric, synthetic_sweep

    losses, base = paper_like_losses(1e6)
    average = AverageConfig(name="zh-heavy", terms={"zh": 2, "en": 1})
    grid = ([0.1, 0.3, 0.5, 0.7, 0.9], list(10 ** np.linspace(-5, -3, 5)))
    records = [
        r.model_copy(update={"average": average, "scores_from": "final_eval"})
        for r in synthetic_sweep(*grid, ridge_metric(-4.6, 1.2), losses, base)
    ]
    config = FrontierConfig(grid_size=11, n_bootstrap=0, n_posterior_samples=50, dcpt_starts=4, n_restarts_optimizer=0)
    summary = analyze_records(records, config, None).summary
    assert summary["metric"]["definition"] == {
        "name": "zh-heavy", "terms": {"zh": 2.0, "en": 1.0}, "scores_from": ["final_eval"],
        "described": "zh-heavy = (2·zh + 1·en) / 3",
    }  # fmt: skip
    line = "- **Averaged metric**: zh-heavy = (2·zh + 1·en) / 3 (each 0–100), from each run's final evaluation."
    assert line in markdown_report(summary).splitlines()
