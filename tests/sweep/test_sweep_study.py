"""The sweep driver on fake in-process runs (tests/fake_runs.py): what runs, what is recorded,
failures, resume after interruption, early stopping, refusing a mixed folder."""

import json
import threading
import time
from pathlib import Path

import optuna
import pytest

from almr.config import AlmrConfig
from almr.errors import AlmrError, ConfigError
from almr.sweep import study as study_module
from almr.sweep.design import distributions
from almr.sweep.launch import FunctionLauncher, RunExit, RunSpec
from almr.sweep.records import fit_ready, load_records
from almr.sweep.study import SweepResult, open_study, run_sweep
from fake_runs import KEYS, Surface, fake_run

SURFACE = Surface(a=-3.5, b=0.5, width=0.5, peak=0.5, spread=0.4, height=12.0, tilt=1.0)


def spec(tmp_path: Path, **sweep: object) -> AlmrConfig:
    raw = {
        "mixture": {"almr": 0.5},
        "cpt": {"probe": {"every_tokens": 10_000}},
        "eval": {"average": list(KEYS)},
        "sweep": {"almr": {"values": [0.2, 0.5, 0.8]}, "lr": {"values": [1e-4, 1e-3], "low": 1e-5, "high": 1e-2},
                  "sweep_dir": str(tmp_path / "sweep"), "poll_s": 0.01, **sweep},
    }  # fmt: skip
    return AlmrConfig.model_validate(raw)


class Counting:
    """Wraps a run function and counts the calls per run_id."""

    def __init__(self, run) -> None:
        self.run = run
        self.calls: dict[str, int] = {}

    def __call__(self, spec: RunSpec, should_stop) -> None:
        self.calls[spec.run_id] = self.calls.get(spec.run_id, 0) + 1
        self.run(spec, should_stop)


def test_grid_runs_every_point_once_and_records_it(tmp_path: Path) -> None:
    config = spec(tmp_path, parallel=2)
    runs = Counting(fake_run(SURFACE))
    result = run_sweep(config, FunctionLauncher(runs))
    points = sorted((r.almr, r.lr) for r in result.records)
    assert points == [(a, lr) for a in (0.2, 0.5, 0.8) for lr in (1e-4, 1e-3)]
    assert set(runs.calls.values()) == {1}
    for r in result.records:
        assert r.status == "completed" and r.tokens == 100_000 and len(r.probe_history) == 10
        final = r.probe_history[-1]["scores"][KEYS[0]]
        assert r.averaged_metric == pytest.approx(final)
        assert r.val_loss.keys() == {"en", "zh"} and r.val_history[0]["tokens"] == 0
    best = result.best
    assert best is not None and best.averaged_metric == max(r.averaged_metric for r in result.records)
    baseline = json.loads((tmp_path / "sweep" / "baseline.json").read_text())
    assert baseline["val_loss"] == {"en": 2.0, "zh": 4.0}
    study = optuna.load_study(study_name="almr-sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    assert sorted(t.value for t in study.trials) == sorted(r.averaged_metric for r in result.records)
    assert (tmp_path / "sweep" / "sweep.yaml").is_file()


def test_a_failed_run_is_reported_and_excluded_never_scored_zero(tmp_path: Path) -> None:
    config = spec(tmp_path)
    run = fake_run(SURFACE, fail=lambda almr, lr: almr == 0.5 and lr == 1e-3)
    result = run_sweep(config, FunctionLauncher(run))
    failed = [r for r in result.records if r.status == "failed"]
    assert len(failed) == 1 and "synthetic failure" in (failed[0].error or "")
    assert failed[0].averaged_metric is None and failed[0].scores == {}
    study = optuna.load_study(study_name="almr-sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE"] * 5 + ["FAIL"]
    assert all(t.value is None for t in study.trials if t.state.name == "FAIL")
    assert len(fit_ready(result.records, 5)) == 5
    with pytest.raises(AlmrError, match=r"needs at least 8 completed runs.*5 of 6.*1 failed: r\d+.*Run 3 more"):
        fit_ready(result.records, 8)


def test_resume_skips_completed_runs_and_resumes_a_killed_one_from_its_checkpoint(tmp_path: Path) -> None:
    config = spec(tmp_path, parallel=2)
    fake = fake_run(SURFACE)
    seen: list[RunSpec] = []

    def killed_midway(spec: RunSpec, should_stop) -> None:
        seen.append(spec)
        if spec.almr == 0.5 and spec.lr == 1e-4 and not spec.resume:
            (spec.run_dir / "checkpoints" / "step_3").mkdir(parents=True)
            (spec.run_dir / "checkpoints" / "step_3" / "complete").write_text("{}")
            raise KeyboardInterrupt  # the driver is interrupted while this run is in flight
        fake(spec, should_stop)

    runs = Counting(killed_midway)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, FunctionLauncher(runs))
    first = {r.run_id: r.status for r in load_records(tmp_path / "sweep")}
    # two runs finished; the third was in flight when the driver stopped
    assert sorted(first.values()) == ["completed", "completed", "running"]
    mtimes = {rid: (tmp_path / "sweep" / "runs" / rid / "metrics.jsonl").stat().st_mtime_ns
              for rid, s in first.items() if s == "completed"}  # fmt: skip

    result = run_sweep(config, FunctionLauncher(runs))
    assert len(result.records) == 6 and {r.status for r in result.records} == {"completed"}
    for rid in mtimes:  # completed runs are not re-run
        assert runs.calls[rid] == 1
        assert (tmp_path / "sweep" / "runs" / rid / "metrics.jsonl").stat().st_mtime_ns == mtimes[rid]
    killed = next(s.run_id for s in seen if s.almr == 0.5 and s.lr == 1e-4)
    assert runs.calls[killed] == 2 and [s.resume for s in seen if s.run_id == killed] == [False, True]
    assert sum(runs.calls.values()) == 7


class ThreadLauncher:
    """Runs each point in a thread after `wait(spec)`: runs that end when the test decides."""

    def __init__(self, run, wait) -> None:
        self.run, self.wait = run, wait
        self.ended: list[str] = []

    def start(self, spec: RunSpec) -> threading.Thread:
        def body() -> None:
            self.wait(spec)
            self.run(spec, lambda: False)
            self.ended.append(spec.run_id)

        thread = threading.Thread(target=body, name=spec.run_id)
        thread.start()
        return thread

    def poll(self, thread: threading.Thread) -> RunExit | None:
        return None if thread.is_alive() else RunExit(True)

    def stop(self, thread: threading.Thread) -> None:
        thread.join()


def test_a_slot_is_refilled_as_soon_as_its_run_ends(tmp_path: Path) -> None:
    held: list[bool] = []

    def wait(spec: RunSpec) -> None:
        if spec.almr == 0.2 and spec.lr == 1e-4:  # the first run holds its slot until the other five ended
            deadline = time.monotonic() + 30
            while len(launcher.ended) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            held.append(len(launcher.ended) == 5)

    launcher = ThreadLauncher(fake_run(SURFACE), wait)
    result = run_sweep(spec(tmp_path, parallel=2), launcher)
    assert [r.status for r in result.records] == ["completed"] * 6
    # the five quick runs took turns in the second slot while the slow one held the first
    assert held == [True] and launcher.ended[-1].startswith("r000")


def test_a_sweep_folder_of_another_base_config_is_refused(tmp_path: Path) -> None:
    run_sweep(spec(tmp_path, almr={"values": [0.2, 0.5]}), FunctionLauncher(fake_run(SURFACE)))
    other = spec(tmp_path).model_copy(update={"cpt": spec(tmp_path).cpt.model_copy(update={"seed": 9})})
    with pytest.raises(ConfigError, match="different base config"):
        open_study(other)
    # what may differ within a sweep: the sweep section itself (here: more parallel runs)
    open_study(spec(tmp_path, almr={"values": [0.2, 0.5]}, parallel=3))


def test_the_adaptive_design_needs_a_probe_metric(tmp_path: Path) -> None:
    config = spec(tmp_path, design="adaptive")
    raw = config.model_dump()
    raw["cpt"]["probe"]["every_tokens"] = 0
    with pytest.raises(ConfigError, match=r"cpt\.probe\.every_tokens"):
        run_sweep(AlmrConfig.model_validate(raw), FunctionLauncher(fake_run(SURFACE)))


def test_adaptive_design_proposes_batches_and_prunes_runs_that_cannot_catch_up(tmp_path: Path) -> None:
    config = spec(tmp_path, design="adaptive", almr={"low": 0.0, "high": 1.0}, n_initial=6, max_runs=14,
                  parallel=2, pruning={"enabled": True, "n_startup_runs": 3, "percentile": 50})  # fmt: skip
    rounds: list[int] = []
    result = run_sweep(
        config, FunctionLauncher(fake_run(SURFACE)), on_finish=lambda recs: bool(rounds.append(len(recs)))
    )
    assert rounds == [2, 4, 6, 8, 10, 12, 14]  # rounds of `parallel` runs up to max_runs
    statuses = [r.status for r in result.records]
    assert statuses.count("pruned") >= 2 and "failed" not in statuses
    for r in result.records:
        if r.status == "pruned":
            assert 0 < r.tokens < 100_000 and r.probe_history and r.averaged_metric is not None
    # the GP sees a pruned run at its last averaged metric (GPSampler fits COMPLETE trials only)
    study = optuna.load_study(study_name="almr-sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'study.db'}")
    told = {t.user_attrs["run_id"]: t for t in study.trials}
    for r in result.records:
        assert told[r.run_id].state.name == "COMPLETE" and told[r.run_id].value == pytest.approx(r.averaged_metric)
        assert told[r.run_id].user_attrs.get("pruned", False) == (r.status == "pruned")
    best = result.best
    assert best is not None and best.status == "completed"
    assert best.averaged_metric > SURFACE.base + 0.5 * SURFACE.height  # it found the bump


def test_two_drivers_share_one_study_and_run_each_point_once(tmp_path: Path) -> None:
    config = spec(tmp_path, parallel=2)
    open_study(config)  # created once; both drivers load it (as workers of a shared RDB study would)
    runs = Counting(fake_run(SURFACE))
    launchers = [ThreadLauncher(runs, wait=lambda spec: time.sleep(0.3)) for _ in range(2)]
    other = threading.Thread(target=run_sweep, args=(config, launchers[1]))
    other.start()
    result = run_sweep(config, launchers[0])
    other.join(timeout=60)
    result = SweepResult(result.sweep_dir, load_records(tmp_path / "sweep"))
    assert sorted(runs.calls) == sorted(r.run_id for r in result.records) and set(runs.calls.values()) == {1}
    assert len(result.records) == 6 and {r.status for r in result.records} == {"completed"}
    assert all(launcher.ended for launcher in launchers)  # both drivers ran some of the points


def test_a_run_whose_driver_died_is_taken_over_once_it_goes_silent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(study_module, "STALE_S", 3600.0)  # alive until the driver has waited for it
    config = spec(tmp_path)
    study = open_study(config)
    # a driver took the first grid point, marked it, and was killed (SIGKILL)
    dead = study.ask(distributions(config.sweep))
    dead.set_user_attr("driver", "a-driver-killed-by-sigkill")
    dead.set_user_attr("heartbeat", time.time())
    runs = Counting(fake_run(SURFACE))
    logs: list[str] = []

    def log(line: str) -> None:
        logs.append(line)
        if "waiting for" in line:  # from now on the dead driver's mark is too old
            study_module.STALE_S = 0.0

    result = run_sweep(config, FunctionLauncher(runs), log=log)
    assert len(result.records) == 6 and {r.status for r in result.records} == {"completed"}
    assert set(runs.calls.values()) == {1}
    assert any("waiting for 1 run(s) of other drivers" in line for line in logs)
    taken = next(r for r in result.records if (r.almr, r.lr) == (dead.params["almr"], dead.params["lr"]))
    assert logs.index(next(x for x in logs if taken.run_id in x)) > logs.index(
        next(x for x in logs if "waiting" in x)
    )  # taken over only after it went silent
