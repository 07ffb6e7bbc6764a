"""`almr sweep`: an ALMR × LR study of CPT runs, driven by an Optuna study through ask/tell.

Contract of `run_sweep(config, launcher=None, ...)`:

- **Folder** `sweep.sweep_dir`: `sweep.yaml` (the resolved spec; `almr sweep SWEEP/sweep.yaml`
  resumes), `study.db` (Optuna's SQLite storage unless `sweep.storage` names another RDB URL),
  `baseline.json` (`{"val_loss": {...}, "scores": {...}}` of the base model: the runs' step-0
  validation, and a step-0 probe or `baseline_scores(config)`), `runs/<run_id>/` (one CPT run
  folder each, with `record.json`, see `almr.sweep.records`). A folder whose study or records carry
  another `base_hash` (a different base config) is refused.
- **Designs**: `grid` enqueues every grid point once (exactly `design.grid_points`) and runs them
  `sweep.parallel` at a time; `adaptive` asks the study (scrambled Sobol for the first
  `sweep.n_initial` runs, then Optuna's `GPSampler`: a GP on the averaged metric, expected
  improvement, conditioned on the runs still in flight) for runs until `sweep.max_runs` have
  finished (completed, failed or pruned).
- **Slots**: `sweep.parallel` runs are in flight at a time; when one ends (finished, failed,
  pruned) it is told to the study and the next run is asked for and launched at once, so a slot
  freed by early stopping or a short Slurm job never idles. Each run is told its averaged metric
  (final probe scores over `eval.average`), or FAIL (a run that failed or left no probe scores:
  excluded from the GP, reported, never a 0); a pruned run is told its last averaged metric (see
  `_tell_pruned`). Which runs the GP proposes depends on the order in which runs end; with
  `sweep.parallel: 1` (or an in-process launcher) a sweep is reproducible run for run.
- **Early stopping** (`sweep.pruning.enabled`): between polls the driver reads each running
  run's metrics.jsonl; every new probe event is reported to its trial as the averaged metric at
  step = tokens trained, and when Optuna's `PercentilePruner` says the run cannot keep up with the
  completed runs at that token count, the launcher stops it (a local run's process group gets
  SIGTERM). The record keeps its partial histories with status `pruned`.
- **Resume**: running the same spec again skips every finished trial; a trial left RUNNING by an
  interrupted driver is relaunched in the same folder, with `--resume` when the folder holds a
  complete checkpoint. An interrupt (Ctrl-C, SIGTERM) stops the runs in flight and releases them.
- **Many drivers** (a shared `sweep.storage`, e.g. PostgreSQL, and a shared `sweep_dir`): each
  driver marks the trials it runs (user attrs `driver`, `heartbeat` every `HEARTBEAT_S` at its
  polls) and never touches another live driver's; a trial released by an interrupted driver, or
  whose driver stopped marking it for `STALE_S` (or 3 polls, if longer), is taken over. Runs are
  chosen under a flock on `SWEEP_DIR/drivers.lock`. At most `max_runs` runs start in all: the
  count includes every driver's runs in flight; a driver with nothing to start waits for the
  others' runs, so it returns with the study complete.
"""

import fcntl
import json
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from almr.config import AlmrConfig, dump_config
from almr.errors import AlmrError, ConfigError
from almr.sweep import design
from almr.sweep.launch import FunctionLauncher, Launcher, LocalLauncher, RunExit, RunSpec, SlurmLauncher
from almr.sweep.records import RunRecord, fill_from_metrics, load_records, read_events

STUDY = "almr-sweep"
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
HEARTBEAT_S = 10.0  # a driver marks each of its runs alive this often (at its polls)
STALE_S = 120.0  # a run whose driver has not marked it for this long is taken over by another


@dataclass
class SweepResult:
    sweep_dir: Path
    records: list[RunRecord]

    @property
    def best(self) -> RunRecord | None:
        """The completed run with the highest averaged metric (the study's recommendation)."""
        ranked = [r for r in self.records if r.status == "completed" and r.averaged_metric is not None]
        return max(ranked, key=lambda r: r.averaged_metric or 0.0) if ranked else None


# --------------------------------------------------------------------------- checks and setup


def check_spec(config: AlmrConfig) -> None:
    """Refuse a spec that cannot produce what the design needs, before anything is written."""
    sweep = config.sweep
    if config.mixture.weights is not None:
        raise ConfigError(
            "sweep: the base config sets mixture.weights, so mixture.almr cannot be swept; "
            "give mixture.almr (with mixture.sub_weights for the other sources) instead"
        )
    ranked = sweep.design == "adaptive" or sweep.pruning.enabled
    if ranked and not config.cpt.probe.every_tokens:
        what = "the adaptive design" if sweep.design == "adaptive" else "sweep.pruning"
        raise ConfigError(
            f"{what} ranks runs by the averaged metric of the probe, but cpt.probe.every_tokens is 0; set it "
            "(and eval.data_dir, eval.average), or use sweep.design=grid without pruning"
        )
    lo, hi = config.sweep.almr.low, config.sweep.lr.low
    design.point_config(config, lo, hi, str(Path(sweep.sweep_dir) / "runs" / "check"))  # validates a point


def storage_url(config: AlmrConfig) -> str:
    return config.sweep.storage or f"sqlite:///{Path(config.sweep.sweep_dir).resolve() / 'study.db'}"


def open_study(config: AlmrConfig) -> optuna.Study:
    """The sweep's Optuna study (created, or loaded to resume), after checking the folder's identity."""
    sweep = config.sweep
    sweep_dir = Path(sweep.sweep_dir)
    ours = design.base_hash(config)
    others = sorted({r.base_hash for r in load_records(sweep_dir) if r.base_hash and r.base_hash != ours})
    if others:
        raise ConfigError(
            f"{sweep_dir} holds runs of a different base config (base_hash {others[0][:12]}, this spec "
            f"{ours[:12]}): only mixture.almr, cpt.optimizer.lr, cpt.run_dir and sweep.* may differ within "
            "a sweep; choose another sweep.sweep_dir, or restore the base config (SWEEP/sweep.yaml)"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage_url(config), study_name=STUDY, direction="maximize", load_if_exists=True,
        sampler=design.make_sampler(sweep), pruner=design.make_pruner(sweep),
    )  # fmt: skip
    stored = study.user_attrs.get("base_hash")
    if stored not in (None, ours):
        raise ConfigError(
            f"the study in {storage_url(config)} belongs to a different base config (base_hash {stored[:12]}, "
            f"this spec {ours[:12]}); choose another sweep.sweep_dir or sweep.storage"
        )
    if study.user_attrs.get("design") not in (None, sweep.design):
        raise ConfigError(
            f"{sweep_dir} was started with sweep.design={study.user_attrs['design']}; resume it with that design"
        )
    study.set_user_attr("base_hash", ours)
    study.set_user_attr("design", sweep.design)
    if sweep.design == "grid" and not study.user_attrs.get("grid_enqueued"):
        for almr, lr in design.grid_points(sweep):
            study.enqueue_trial({"almr": almr, "lr": lr})
        study.set_user_attr("grid_enqueued", True)
    (sweep_dir / "sweep.yaml").write_text(dump_config(config), encoding="utf-8")
    return study


def total_runs(config: AlmrConfig) -> int:
    sweep = config.sweep
    return len(design.grid_points(sweep)) if sweep.design == "grid" else sweep.max_runs


def default_launcher(config: AlmrConfig) -> Launcher:
    if config.sweep.launcher == "slurm":
        return SlurmLauncher(config.sweep.slurm, Path(config.sweep.sweep_dir).resolve() / "slurm")
    return LocalLauncher()


def threads_per_run(config: AlmrConfig) -> int:
    sweep = config.sweep
    return sweep.threads_per_run or max(1, (os.cpu_count() or 1) // sweep.parallel)


def plan_runs(config: AlmrConfig) -> list[RunSpec]:
    """The runs a fresh sweep would launch first (all of a grid; the first `sweep.parallel` runs of an adaptive
    design), from an in-memory copy of the study: nothing is written (`--dry-run`)."""
    check_spec(config)
    sweep = config.sweep
    if sweep.design == "grid":
        points = design.grid_points(sweep)
    else:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=design.make_sampler(sweep))
        trials = [study.ask(design.distributions(sweep)) for _ in range(min(sweep.parallel, sweep.max_runs))]
        points = [(t.params["almr"], t.params["lr"]) for t in trials]
    root = Path(sweep.sweep_dir).resolve() / "runs"
    specs = []
    for number, (almr, lr) in enumerate(points):
        rid = design.run_id(number, almr, lr)
        cfg = design.point_config(config, almr, lr, str(root / rid))
        specs.append(RunSpec(rid, almr, lr, root / rid, cfg, threads=threads_per_run(config)))
    return specs


# --------------------------------------------------------------------------- watching a run


@dataclass
class _Active:
    trial: optuna.trial.Trial
    spec: RunSpec
    started: float
    wall_before: float
    handle: Any = None
    reported: set[int] = field(default_factory=set)
    pruned: bool = False
    beat: float = 0.0


def _check(active: _Active, average: list[str], pruning: bool) -> bool:
    """Report new probe events to the trial; True when the pruner says stop."""
    from almr.evaluate.results import averaged_metric

    if active.pruned:
        return True
    events = read_events(active.spec.run_dir)
    pruning = pruning and not any(e.get("event") == "end" for e in events)  # a finished run is not pruned
    for event in events:
        if event.get("event") != "probe" or int(event["tokens"]) in active.reported:
            continue
        tokens = int(event["tokens"])
        active.reported.add(tokens)
        try:
            value = averaged_metric(event["scores"], average)
        except AlmrError:
            continue  # a probe without the averaged keys cannot be compared; the final record says so
        if math.isfinite(value):
            active.trial.report(value, tokens)
            if pruning and active.trial.should_prune():
                active.pruned = True
                return True
    return False


@contextmanager
def _choosing(sweep_dir: Path) -> Iterator[None]:
    """Drivers sharing a sweep folder take turns to choose runs: popping an enqueued grid point or
    taking over an orphan is a read-then-write that SQLite does not make atomic (measured: two
    drivers ran a point twice without this lock)."""
    with (sweep_dir / "drivers.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _heartbeat(active: _Active) -> None:
    now = time.time()
    if now - active.beat >= HEARTBEAT_S:  # a new run's beat is 0: marked at once
        active.trial.set_user_attr("heartbeat", now)
        active.beat = now


def _orphans(study: optuna.Study, driver: str, poll_s: float) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials that no live driver holds: released by an interrupted driver (`driver` ""),
    or whose driver has not touched them for max(STALE_S, 3 poll intervals) — it died. A trial of a
    study from before drivers marked their trials counts from its start time."""
    now = time.time()
    orphans = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = frozen.user_attrs.get("driver")
        if owner == driver:
            continue
        start = frozen.datetime_start.timestamp() if frozen.datetime_start else 0.0
        beat = float(frozen.user_attrs.get("heartbeat", start))
        stale = max(STALE_S, 3 * max(poll_s, float(frozen.user_attrs.get("poll_s", 0.0))))
        if owner == "" or now - beat > stale:
            orphans.append(frozen)
    return orphans


def _settle(study: optuna.Study, trial: optuna.trial.Trial, record: RunRecord | None) -> bool:
    """Tell a RUNNING trial whose run already ended (its record is final); False if it must run."""
    if record is None or record.status not in ("completed", "failed", "pruned"):
        return False
    if record.status == "pruned":
        _tell_pruned(study, trial, record.averaged_metric)
    elif record.status == "completed" and record.averaged_metric is not None:
        study.tell(trial, record.averaged_metric)
    else:
        study.tell(trial, state=TrialState.FAIL)
    return True


def _tell_pruned(study: optuna.Study, trial: optuna.trial.Trial, last: float | None) -> None:
    """A pruned run is told COMPLETE with its last averaged metric (user attr `pruned`), not PRUNED:
    Optuna's GPSampler fits COMPLETE trials only, so a PRUNED point stays unknown to the GP, which
    proposes there again and again (measured: docs/benchmarks.md, Sweep). The last probe value is
    below what the run would have reached, which is the pruner's very claim about the point."""
    if last is None:
        study.tell(trial, state=TrialState.PRUNED)
        return
    trial.set_user_attr("pruned", True)
    study.tell(trial, last)


def _finish(study: optuna.Study, active: _Active, exit_: RunExit, config: AlmrConfig, base: str) -> RunRecord:
    spec = active.spec
    record = RunRecord(run_id=spec.run_id, almr=spec.almr, lr=spec.lr, base_hash=base)
    record = fill_from_metrics(record, spec.run_dir, config.eval.average)
    ended = any(e.get("event") == "end" for e in read_events(spec.run_dir))
    update: dict[str, Any] = {"wall_time_s": active.wall_before + time.time() - active.started}
    if active.pruned:
        update["status"] = "pruned"
        _tell_pruned(study, active.trial, record.averaged_metric)
    elif exit_.ok and ended:
        update["status"] = "completed"
        if record.averaged_metric is None:
            update["error"] = (
                f"no averaged metric: the run's last probe lacks {config.eval.average} or no probe ran "
                "(cpt.probe.every_tokens); excluded from the ranking"
            )
            study.tell(active.trial, state=TrialState.FAIL)
        else:
            study.tell(active.trial, record.averaged_metric)
    else:
        update["status"] = "failed"
        update["error"] = exit_.error if not exit_.ok else "the run exited without its end event"
        study.tell(active.trial, state=TrialState.FAIL)
    record = record.model_copy(update=update)
    record.save(spec.run_dir)
    return record


# --------------------------------------------------------------------------- the driver


def run_sweep(
    config: AlmrConfig,
    launcher: Launcher | None = None,
    *,
    on_finish: Callable[[list[RunRecord]], bool] | None = None,
    baseline_scores: Callable[[AlmrConfig], dict[str, float]] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> SweepResult:
    """Run (or resume) the study described by `config.sweep` from the base `config`.
    `on_finish(records)` is called whenever runs have ended (once per look at the runs in flight);
    True launches no further run: those in flight finish, and the sweep can be resumed later."""
    check_spec(config)
    sweep = config.sweep
    sweep_dir = Path(sweep.sweep_dir)
    study = open_study(config)
    base = design.base_hash(config)
    launcher = launcher or default_launcher(config)
    dists = design.distributions(sweep)
    total = total_runs(config)
    pruning = sweep.pruning.enabled
    average = config.eval.average
    records = {r.run_id: r for r in load_records(sweep_dir)}
    driver = uuid.uuid4().hex  # this driver's mark on the trials it runs (see _orphans)
    by_id: dict[str, _Active] = {}
    if isinstance(launcher, FunctionLauncher):  # an in-process run asks between its probe events
        launcher.should_stop = lambda spec: _check(by_id[spec.run_id], average, pruning)

    def launch(trial: optuna.trial.Trial, resume_ok: bool) -> _Active | None:
        """Start the trial's run; None when it could not start (then it is already told FAIL)."""
        almr, lr = float(trial.params["almr"]), float(trial.params["lr"])
        rid = trial.user_attrs.get("run_id") if resume_ok else None
        if rid is None:
            rid = design.run_id(trial.number, almr, lr)
            trial.set_user_attr("run_id", rid)
        run_dir = (sweep_dir / "runs" / rid).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        point = design.point_config(config, almr, lr, str(run_dir))
        (run_dir / "config.yaml").write_text(dump_config(point), encoding="utf-8")
        resume = resume_ok and any((run_dir / "checkpoints").glob("step_*/complete"))
        before = records[rid].wall_time_s if rid in records else 0.0
        spec = RunSpec(rid, almr, lr, run_dir, point, resume=resume, threads=threads_per_run(config))
        RunRecord(run_id=rid, almr=almr, lr=lr, status="running", base_hash=base, wall_time_s=before).save(run_dir)
        trial.set_user_attr("driver", driver)
        trial.set_user_attr("poll_s", sweep.poll_s)
        active = _Active(trial, spec, time.time(), before)
        _heartbeat(active)
        active.reported = {int(k) for k in study._storage.get_trial(trial._trial_id).intermediate_values}
        by_id[rid] = active
        log(f"{'resume' if resume else 'start'} {rid} (ALMR {almr:.4g}, LR {lr:.3g})")
        try:
            active.handle = launcher.start(spec)
        except Exception as err:  # a submission that cannot start is a failed run, not a crash
            _finish(study, active, RunExit(False, f"could not start: {type(err).__name__}: {err}"), config, base)
            return None
        except BaseException:  # interrupted while starting: release the trial for a resume
            trial.set_user_attr("driver", "")
            raise
        return active

    def fill_slots() -> None:
        """Take over runs no live driver holds (this folder's interrupted driver, a dead worker of a
        shared study) — settling those whose record is final — then ask for new runs, while slots are
        free. One driver at a time (`_choosing`)."""
        nonlocal records
        with _choosing(sweep_dir):
            orphans = _orphans(study, driver, sweep.poll_s)
            if orphans:
                records = {r.run_id: r for r in load_records(sweep_dir)}
            for frozen in orphans:
                if len(in_flight) >= sweep.parallel:
                    break
                trial = optuna.trial.Trial(study, frozen._trial_id)
                if _settle(study, trial, records.get(frozen.user_attrs.get("run_id", ""))):
                    continue
                if (active := launch(trial, resume_ok=True)) is not None:
                    in_flight.append(active)
            while len(in_flight) < sweep.parallel:
                started = len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
                if started >= total:  # counts every driver's runs in flight (a shared study)
                    break
                if sweep.design == "grid" and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                    break
                if (active := launch(study.ask(dists), resume_ok=False)) is not None:
                    in_flight.append(active)

    in_flight: list[_Active] = []
    # SIGTERM (kill, scancel of the driver's own job) must stop the runs in flight like Ctrl-C:
    # Python's default would end the driver at once and leave them running, writing into folders
    # that a resumed sweep relaunches.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        stopping = waiting_logged = False
        while True:
            if not stopping and len(in_flight) < sweep.parallel:
                fill_slots()
            if not in_flight:
                others = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if stopping or not others:
                    break
                # other drivers' runs: wait for them to end, or take them over if their driver died
                if not waiting_logged:
                    log(f"waiting for {len(others)} run(s) of other drivers (taken over after {STALE_S:.0f} s silence)")
                    waiting_logged = True
                time.sleep(sweep.poll_s)
                continue
            ended = _look(study, launcher, in_flight, config, base, pruning)
            if ended:
                records = {r.run_id: r for r in load_records(sweep_dir)}
                write_baseline(sweep_dir, config, list(records.values()), baseline_scores)
                if on_finish is not None and on_finish(list(records.values())):
                    stopping = True
            elif in_flight:
                time.sleep(sweep.poll_s)
    finally:
        for active in in_flight:  # interrupted: stop what is in flight and release it for a resume
            launcher.stop(active.handle)
            active.trial.set_user_attr("driver", "")
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return SweepResult(sweep_dir, load_records(sweep_dir))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _look(study: optuna.Study, launcher: Launcher, in_flight: list[_Active], config: AlmrConfig,
          base: str, pruning: bool) -> int:  # fmt: skip
    """One look at every run in flight: report probes, stop the pruned, settle the ended (removed
    from `in_flight`). Returns how many ended."""
    ended = 0
    for active in list(in_flight):
        _heartbeat(active)
        if _check(active, config.eval.average, pruning):
            launcher.stop(active.handle)
        exit_ = launcher.poll(active.handle)
        if exit_ is not None:
            _check(active, config.eval.average, False)  # report the last probes; a finished run is not pruned
            in_flight.remove(active)
            _finish(study, active, exit_, config, base)
            ended += 1
    return ended


# --------------------------------------------------------------------------- baseline


def write_baseline(sweep_dir: Path, config: AlmrConfig, records: list[RunRecord],
                   scores_fn: Callable[[AlmrConfig], dict[str, float]] | None) -> dict | None:  # fmt: skip
    """`baseline.json`: the base model's held-out loss per source (the step-0 validation every run
    does first; all runs share it) and its probe scores (a step-0 probe event, else `scores_fn`)."""
    path = Path(sweep_dir) / "baseline.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("val_loss") and (old.get("scores") or scores_fn is None):
            return old
    val_loss: dict[str, float] = {}
    scores: dict[str, float] = {}
    for record in records:
        if not val_loss and record.val_history and record.val_history[0]["tokens"] == 0:
            val_loss = record.val_history[0]["loss"]
        if not scores and record.probe_history and record.probe_history[0]["tokens"] == 0:
            scores = record.probe_history[0]["scores"]
    if not scores and scores_fn is not None:
        scores = scores_fn(config)
    if not val_loss and not scores:
        return None
    baseline = {"model": config.model.name_or_path, "val_loss": val_loss, "scores": scores}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(baseline, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return baseline


def probe_base_model(config: AlmrConfig) -> dict[str, float]:
    """The probe's scores of the base model (model.name_or_path), in this process; {} without a probe."""
    if not config.cpt.probe.every_tokens or not config.model.name_or_path:
        return {}
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from almr.evaluate.probe import probe_from_config

    tokenizer = AutoTokenizer.from_pretrained(config.model.name_or_path)
    probe = probe_from_config(config, tokenizer)
    if probe is None:
        return {}
    model = AutoModelForCausalLM.from_pretrained(config.model.name_or_path, dtype=torch.float32)
    return dict(probe(model, 0, 0))
