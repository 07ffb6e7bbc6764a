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
  (`eval.average` over its final scores: the `sweep.final_eval` suite on its final checkpoint when
  that is on, else its last probe), or FAIL (a run that failed — in training or in its final
  evaluation — or left no scores: excluded from the GP, reported, never a 0); a pruned run is told
  its last probe's averaged metric (see `_tell_pruned`). A study by the losses (no probe, no final
  evaluation: `check_spec` then requires validation) records each completed run without an error
  and tells a grid COMPLETE with minus its additional-language validation loss (see
  `_tell_losses_only`); its run that left no validation loss fails. Which runs the GP proposes depends on the
  order in which runs end; with `sweep.parallel: 1` (or an in-process launcher) a sweep is
  reproducible run for run.
- **Early stopping** (`sweep.pruning.enabled`): between polls the driver reads each running
  run's metrics.jsonl; every new probe event is reported to its trial as the averaged metric at
  step = tokens trained, and when Optuna's `PercentilePruner` says the run cannot keep up with the
  completed runs at that token count, the launcher stops it (a local run's process group gets
  SIGTERM). The record keeps its partial histories with status `pruned`.
- **Resume**: running the same spec again skips every finished trial; a trial left RUNNING by an
  interrupted driver is taken over: reattached when its run still goes on (a local run whose
  processes still hold `RUN/owner.lock`, a Slurm job the trial's `job_id` names that has not
  ended), else relaunched in the same folder, with `--resume` when the folder holds a complete
  checkpoint. An interrupt (Ctrl-C, SIGTERM, SIGHUP) stops the runs in flight and releases them.
  The adaptive design's space-filling points are enqueued by index (`design.initial_point`) and
  the GP's seed follows the number of trials, so a resumed study never proposes a point again
  because a new driver process started its sampler afresh.
- **Before any run** (`run_sweep`): the spec (`check_spec`), `sweep.storage` (the URL, its driver,
  a connection: `storage.check_storage`), the probe (`check_probe`) and — for real `almr cpt` runs,
  the default launcher — the base model, the shards and the mixture plan (`preflight.check_inputs`);
  the disk the study needs is logged (`preflight.disk_needed`).
- **A run that cannot be submitted** (the launcher's `start` raises: sbatch down, a folder another
  process owns) is not a failed run: its trial is released and its record says why (status
  `pending`, `error`); the driver launches nothing more, lets the runs in flight end and returns,
  and the next `almr sweep` retries it. `SweepResult.unstarted` lists such runs.
- **What is kept** (`sweep.keep`): after runs end, `keep.apply_keep` deletes the training state
  and the exports the study does not keep.
- **Many drivers** (a shared `sweep.storage`, e.g. PostgreSQL, and a shared `sweep_dir`): each
  driver marks the trials it runs (user attrs `driver`, `heartbeat` every `HEARTBEAT_S` at its
  polls) and never touches another live driver's; a trial released by an interrupted driver, or
  whose driver stopped marking it for `STALE_S` (or 3 polls, if longer), is taken over. Runs are
  chosen under a flock on `SWEEP_DIR/drivers.lock`. At most `max_runs` runs start in all: the
  count includes every driver's runs in flight; a driver with nothing to start waits for the
  others' runs, so it returns with the study complete.
"""

import contextlib
import fcntl
import functools
import json
import math
import os
import signal
import socket
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
from almr.evaluate.config import AverageConfig
from almr.evaluate.results import averaged_metric
from almr.sweep import design
from almr.sweep.config import SweepConfig, SweepFinalEvalConfig
from almr.sweep.final_eval import check_final_eval
from almr.sweep.keep import apply_keep
from almr.sweep.launch import (
    FunctionLauncher,
    Launcher,
    LocalLauncher,
    RunExit,
    RunSpec,
    SlurmLauncher,
    dry_run_lines,
    free_port,
    gpu_slots,
)
from almr.sweep.records import FINAL_EVAL, RunRecord, fill_from_metrics, load_records, read_events
from almr.sweep.storage import check_storage, storage_url

STUDY = "almr-sweep"
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
HEARTBEAT_S = 10.0  # a driver marks each of its runs alive this often (at its polls)
STALE_S = 120.0  # a run whose driver has not marked it for this long is taken over by another


@dataclass
class SweepResult:
    sweep_dir: Path
    records: list[RunRecord]

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def unstarted(self) -> list[RunRecord]:
        """Runs whose launch failed (their record says why): the next `almr sweep` retries them."""
        return [r for r in self.records if r.status == "pending" and r.error]

    @property
    def best(self) -> RunRecord | None:
        """The completed run with the highest averaged metric (the study's recommendation)."""
        ranked = [r for r in self.records if r.status == "completed" and r.averaged_metric is not None]
        return max(ranked, key=lambda r: r.averaged_metric or 0.0) if ranked else None


# --------------------------------------------------------------------------- checks and setup


def check_spec(config: AlmrConfig) -> None:
    """Refuse a spec that cannot produce what the design needs, before anything is written. It reads
    the mixture, the probe and the sweep, and validates a whole point config."""
    sweep = config.sweep
    if config.mixture.weights is not None:
        raise ConfigError(
            "sweep: the base config sets mixture.weights, so mixture.almr cannot be swept; "
            "give mixture.almr (with mixture.sub_weights for the other sources) instead"
        )
    # the adaptive design ranks finished runs: by their final evaluation when there is one
    ranked = (sweep.design == "adaptive" and not sweep.final_eval.enabled) or sweep.pruning.enabled
    if ranked and not config.cpt.probe.every_tokens:
        what = "sweep.pruning" if sweep.pruning.enabled else "the adaptive design"
        raise ConfigError(
            f"{what} ranks runs by the averaged metric of the probe, but cpt.probe.every_tokens is 0; set it "
            "(and eval.data_dir, eval.average), or use sweep.design=grid without pruning"
            + ("" if sweep.pruning.enabled else ", or sweep.final_eval")
        )
    if not (config.cpt.probe.every_tokens or sweep.final_eval.enabled) and not _validates(config):
        raise ConfigError(
            "the study's runs would record neither a benchmark score nor a validation loss: "
            f"cpt.probe.every_tokens is 0, sweep.final_eval is off and {_why_no_validation(config)}. Set "
            "cpt.validation.every_steps > 0 (with held-out files in data.sources[].valid) for a study by the "
            "losses, or cpt.probe.every_tokens (with eval.data_dir, eval.average) or sweep.final_eval for a study "
            "by the averaged metric"
        )
    if sweep.final_eval.enabled:
        check_final_eval(config)
    lo, hi = config.sweep.almr.low, config.sweep.lr.low
    design.point_config(config, lo, hi, str(Path(sweep.sweep_dir) / "runs" / "check"))  # validates a point


def _validation_sources(config: AlmrConfig) -> list[str]:
    """The mixture's sources with held-out files: the ones a run validates on."""
    taking_part = config.mixture.sources
    return [s.name for s in config.data.sources if s.valid and (taking_part is None or s.name in taking_part)]


def _validates(config: AlmrConfig) -> bool:
    return config.cpt.validation.every_steps > 0 and bool(_validation_sources(config))


def _why_no_validation(config: AlmrConfig) -> str:
    if config.cpt.validation.every_steps == 0:
        return "cpt.validation.every_steps is 0"
    names = ", ".join(s.name for s in config.data.sources) or "none"
    return f"no source of the mixture has held-out files in data.sources[].valid (sources: {names})"


def open_study(config: AlmrConfig) -> optuna.Study:
    """The sweep's Optuna study (created, or loaded to resume), after checking the folder's identity
    (the base config's hash); the whole resolved config is written to SWEEP_DIR/sweep.yaml."""
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
        storage=storage_url(sweep), study_name=STUDY, direction="maximize", load_if_exists=True,
        sampler=design.make_sampler(sweep), pruner=design.make_pruner(sweep),
    )  # fmt: skip
    stored = study.user_attrs.get("base_hash")
    if stored not in (None, ours):
        raise ConfigError(
            f"the study in {storage_url(sweep)} belongs to a different base config (base_hash {stored[:12]}, "
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


def default_launcher(config: AlmrConfig) -> Launcher:
    sweep = config.sweep
    if sweep.launcher == "slurm":
        return SlurmLauncher(sweep.slurm, Path(sweep.sweep_dir).resolve() / "slurm")
    gpus, per_run = local_gpus(config)
    return LocalLauncher(gpus=gpus, gpus_per_run=per_run, parallel=sweep.parallel)


def threads_per_run(sweep: SweepConfig) -> int:
    return sweep.threads_per_run or max(1, (os.cpu_count() or 1) // sweep.parallel)


def visible_gpus() -> list[int]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES when set (numeric ids), else every GPU torch
    sees (torch only loads when the variable is unset)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [int(x) for x in given.split(",") if x.strip().isdigit()]
    import torch

    return list(range(torch.cuda.device_count()))


def local_gpus(config: AlmrConfig, visible: Callable[[], list[int]] = visible_gpus) -> tuple[list[int], int]:
    """The GPUs the local launcher shares out and how many each run gets (0: one plain process per run,
    as on a machine without GPUs or with cpt.device: cpu). Refuses more GPUs than there are."""
    sweep = config.sweep
    if sweep.gpus_per_run == 0 or (sweep.gpus_per_run is None and config.cpt.device == "cpu"):
        return [], 0
    gpus = list(sweep.gpus) if sweep.gpus is not None else visible()
    per_run = sweep.gpus_per_run if sweep.gpus_per_run is not None else len(gpus) // sweep.parallel
    if sweep.gpus_per_run is None and not gpus:
        return [], 0  # no GPU: today's plain processes
    if not per_run:
        raise ConfigError(
            f"sweep.parallel={sweep.parallel} runs in flight but only {len(gpus)} GPUs ({gpus}): each run needs "
            "one at least; lower sweep.parallel, or set cpt.device: cpu (or sweep.gpus_per_run: 0) for CPU runs"
        )
    if per_run * sweep.parallel > len(gpus):
        raise ConfigError(
            f"sweep.gpus_per_run={per_run} × sweep.parallel={sweep.parallel} needs {per_run * sweep.parallel} GPUs, "
            f"but {len(gpus)} are available ({gpus}); lower sweep.parallel or sweep.gpus_per_run, or list more "
            "in sweep.gpus"
        )
    return gpus, per_run


def plan_runs(config: AlmrConfig) -> list[RunSpec]:
    """The runs a fresh sweep would launch first (all of a grid; the first `sweep.parallel` runs of an adaptive
    design), from an in-memory copy of the study: nothing is written (`--dry-run`). Each spec holds its run's
    whole config."""
    check_spec(config)
    sweep = config.sweep
    check_storage(sweep, connect=False)
    if sweep.design == "grid":
        points = design.grid_points(sweep)
    else:
        first = [design.initial_point(sweep, i) for i in range(min(sweep.parallel, sweep.max_runs))]
        points = [(p["almr"], p["lr"]) for p in first]
    root = Path(sweep.sweep_dir).resolve() / "runs"
    gpus, per_run = local_gpus(config) if sweep.launcher == "local" else ([], 0)
    slots = gpu_slots(gpus, per_run, sweep.parallel) if per_run else []
    specs = []
    for number, (almr, lr) in enumerate(points):
        rid = design.run_id(number, almr, lr)
        cfg = design.point_config(config, almr, lr, str(root / rid))
        slot = slots[number % len(slots)] if slots else None  # the first runs in flight, slot by slot
        specs.append(RunSpec(rid, almr, lr, root / rid, cfg, threads=threads_per_run(sweep),
                             final_eval=_final_eval(sweep), gpus=slot,
                             port=free_port() if slot else None))  # fmt: skip
    return specs


def _final_eval(sweep: SweepConfig) -> SweepFinalEvalConfig | None:
    return sweep.final_eval if sweep.final_eval.enabled else None


def dry_run(config: AlmrConfig) -> list[str]:
    """`almr sweep SPEC --dry-run`: how the runs of `plan_runs` would start, as lines, then the disk the study
    will need when the base model can be read here; nothing is written."""
    lines = dry_run_lines(plan_runs(config), config.sweep)
    model = config.model.name_or_path
    if model and Path(model).is_dir():
        from almr.sweep.preflight import disk_needed, parameter_count

        lines.append(disk_needed(config, parameter_count(model)).describe())
    return lines


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


def _check(active: _Active, average: AverageConfig, pruning: bool) -> bool:
    """Report new probe events to the trial; True when the pruner says stop."""
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
    whose driver ran on this machine and is gone (its `driver_host`, `driver_pid`: killed with
    SIGKILL), or whose driver has not touched them for max(STALE_S, 3 poll intervals) — it died
    elsewhere. A trial of a study from before drivers marked their trials counts from its start time."""
    now = time.time()
    orphans = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = frozen.user_attrs.get("driver")
        if owner == driver:
            continue
        start = frozen.datetime_start.timestamp() if frozen.datetime_start else 0.0
        beat = float(frozen.user_attrs.get("heartbeat", start))
        stale = max(STALE_S, 3 * max(poll_s, float(frozen.user_attrs.get("poll_s", 0.0))))
        if owner == "" or now - beat > stale or _driver_gone(frozen.user_attrs):
            orphans.append(frozen)
    return orphans


def _driver_gone(attrs: dict[str, Any]) -> bool:
    """Whether the trial's driver ran on this machine and its process no longer exists."""
    if attrs.get("driver_host") != socket.gethostname() or not attrs.get("driver_pid"):
        return False
    try:
        os.kill(int(attrs["driver_pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _running_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> optuna.trial.Trial:
    """A handle on a RUNNING trial that another driver started (to report to it, mark it and tell it):
    `study.ask` only hands out new trials, so the Trial is built from the trial's storage id."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def _settle(study: optuna.Study, trial: optuna.trial.Trial, record: RunRecord | None, config: AlmrConfig) -> bool:
    """Tell a RUNNING trial whose run already ended (its record is final); False if it must run."""
    if record is None or record.status not in ("completed", "failed", "pruned"):
        return False
    if record.status == "pruned":
        _tell_pruned(study, trial, record.averaged_metric)
    elif record.status == "completed" and record.averaged_metric is not None:
        study.tell(trial, record.averaged_metric)
    elif record.status == "completed" and record.error is None and record.val_loss:
        _tell_losses_only(study, trial, record, config)  # as _finish told it
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


def _tell_losses_only(study: optuna.Study, trial: optuna.trial.Trial, record: RunRecord, config: AlmrConfig) -> None:
    """A completed run of a study by the losses (no probe, no final evaluation): its record has no
    error. A grid study is told COMPLETE with minus the additional language's final validation loss
    (the mean over the sources tagged mixture.additional_language; user attr `objective` says so),
    so that Optuna, too, lists it completed and its best trial is the lowest such loss; the grid's
    sampler never reads the values. An adaptive study is told FAIL: its GP models the averaged
    metric, and a loss must not enter it (check_spec refuses such a study before it starts)."""
    extra = config.mixture.additional_language
    tagged = [s.name for s in config.data.sources if s.language == extra and s.name in record.val_loss]
    if study.user_attrs.get("design") == "grid" and tagged:
        trial.set_user_attr("objective", f"-val_loss:{'+'.join(tagged)}")
        study.tell(trial, -sum(record.val_loss[s] for s in tagged) / len(tagged))
    else:
        trial.set_user_attr("objective", "none (validation losses only)")
        study.tell(trial, state=TrialState.FAIL)


def _finish(study: optuna.Study, active: _Active, exit_: RunExit, average: AverageConfig, base: str) -> RunRecord:
    """Record how the run ended (its record.json, from its metrics.jsonl and final_eval.json) and tell the study."""
    spec = active.spec
    record = RunRecord(run_id=spec.run_id, almr=spec.almr, lr=spec.lr, base_hash=base)
    record = fill_from_metrics(record, spec.run_dir, average, final_eval=spec.final_eval is not None)
    ended = any(e.get("event") == "end" for e in read_events(spec.run_dir))
    update: dict[str, Any] = {"wall_time_s": active.wall_before + time.time() - active.started}
    if active.pruned:
        update["status"] = "pruned"
        _tell_pruned(study, active.trial, record.averaged_metric)
    elif exit_.ok and ended:
        update["status"] = "completed"
        by_losses = not spec.config.cpt.probe.every_tokens and spec.final_eval is None  # nothing scores it
        if record.averaged_metric is None and by_losses and record.val_loss:
            _tell_losses_only(study, active.trial, record, spec.config)
        elif record.averaged_metric is None and by_losses:
            update["status"] = "failed"
            update["error"] = (
                "the run ended without a validation loss, and nothing else scores it (no probe, no final "
                "evaluation): check that its sources' held-out files (data.sources[].valid) hold at least one "
                "sequence of cpt.batch.seq_len + 1 tokens, and cpt.validation.every_steps"
            )
            study.tell(active.trial, state=TrialState.FAIL)
        elif record.averaged_metric is None:
            where = (
                f"its {FINAL_EVAL} is missing or lacks a key"
                if spec.final_eval
                else "its last probe lacks a key, or no probe ran (cpt.probe.every_tokens)"
            )
            update["error"] = (
                record.error or f"no averaged metric ({average.describe()}): {where}; excluded from the ranking"
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
    check_storage(config.sweep)
    cost = check_probe(config)
    if cost:
        log(cost)
    if launcher is None:  # real `almr cpt` runs: what each run reads first, checked once here
        from almr.sweep.preflight import check_inputs, disk_needed, parameter_count

        check_inputs(config)
        log(disk_needed(config, parameter_count(str(config.model.name_or_path))).describe())
        launcher = default_launcher(config)
    study = open_study(config)
    scores = None if baseline_scores is None else functools.partial(baseline_scores, config)
    driver = _Driver(config, study, launcher, on_finish, scores, log)
    with _sigterm_interrupts():
        try:
            driver.drive()
        finally:
            driver.release()
    return SweepResult(driver.sweep_dir, load_records(driver.sweep_dir))


class _Driver:
    """One driver of a study (module docstring): keeps `sweep.parallel` runs in flight, watches them
    and tells the study how each ended. Its state: the runs in flight and the records read so far."""

    def __init__(
        self,
        config: AlmrConfig,
        study: optuna.Study,
        launcher: Launcher,
        on_finish: Callable[[list[RunRecord]], bool] | None,
        baseline_scores: Callable[[], dict[str, float]] | None,
        log: Callable[[str], None],
    ) -> None:
        self.config = config  # the base of every run's config (design.point_config)
        self.sweep = config.sweep
        self.sweep_dir = Path(self.sweep.sweep_dir)
        self.study = study
        self.launcher = launcher
        self.on_finish = on_finish
        self.baseline_scores = baseline_scores
        self.log = log
        self.base = design.base_hash(config)
        self.dists = design.distributions(self.sweep)
        self.total = design.total_runs(self.sweep)
        self.average = config.eval.average
        self.pruning = self.sweep.pruning.enabled
        self.records = {r.run_id: r for r in load_records(self.sweep_dir)}
        self.name = uuid.uuid4().hex  # this driver's mark on the trials it runs (see _orphans)
        self.in_flight: list[_Active] = []
        self.by_id: dict[str, _Active] = {}
        self.unstarted = 0  # runs whose launch failed in this attempt (released for the next one)
        if isinstance(launcher, FunctionLauncher):  # an in-process run asks between its probe events
            launcher.should_stop = lambda spec: _check(self.by_id[spec.run_id], self.average, self.pruning)

    @functools.cached_property
    def storage(self) -> optuna.storages.RDBStorage:
        """A handle of our own on the study's storage: its public lookups find an orphan's trial."""
        return optuna.storages.RDBStorage(storage_url(self.sweep))

    def drive(self) -> None:
        """Fill free slots, look at the runs in flight, until no run is left to start or to wait for."""
        stopping = waiting_logged = False
        while True:
            if not stopping and len(self.in_flight) < self.sweep.parallel:
                self.fill_slots()
                stopping = self.unstarted > 0  # a launch failed: let the runs in flight end, then return
            if not self.in_flight:
                others = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if stopping or not others:
                    return
                # other drivers' runs: wait for them to end, or take them over if their driver died
                if not waiting_logged:
                    self.log(
                        f"waiting for {len(others)} run(s) of other drivers (taken over after {STALE_S:.0f} s silence)"
                    )
                    waiting_logged = True
                time.sleep(self.sweep.poll_s)
                continue
            if self.look():
                self.records = {r.run_id: r for r in load_records(self.sweep_dir)}
                records = list(self.records.values())
                write_baseline(self.sweep_dir, records, self.config.model.name_or_path, self.baseline_scores)
                freed = apply_keep(self.sweep_dir, records, self.sweep.keep)
                if freed:
                    self.log(f"sweep.keep: freed {freed / 1e9:.3g} GB of ended runs' checkpoints")
                if self.on_finish is not None and self.on_finish(list(self.records.values())):
                    stopping = True
            elif self.in_flight:
                time.sleep(self.sweep.poll_s)

    def release(self) -> None:
        """Stop what is still in flight (interrupted) and release its trials for a resumed sweep."""
        for active in self.in_flight:
            self.launcher.stop(active.handle)
            with contextlib.suppress(Exception):  # a stopped local run's poll frees its folder's lock here
                self.launcher.poll(active.handle)
            active.trial.set_user_attr("driver", "")

    def fill_slots(self) -> None:
        """Take over runs no live driver holds (this folder's interrupted driver, a dead worker of a
        shared study) — settling those whose record is final — then ask for new runs, while slots are
        free. One driver at a time (`_choosing`)."""
        with _choosing(self.sweep_dir):
            orphans = _orphans(self.study, self.name, self.sweep.poll_s)
            if orphans:
                self.records = {r.run_id: r for r in load_records(self.sweep_dir)}
            for frozen in orphans:
                if len(self.in_flight) >= self.sweep.parallel or self.unstarted:
                    break
                trial = _running_trial(self.study, self.storage, frozen.number)
                if _settle(self.study, trial, self.records.get(frozen.user_attrs.get("run_id", "")), self.config):
                    continue
                self.start(trial, reported={int(k) for k in frozen.intermediate_values},
                           job_id=frozen.user_attrs.get("job_id"))  # fmt: skip
            while len(self.in_flight) < self.sweep.parallel and not self.unstarted and self._more_to_start():
                self.start(self._ask())

    def _ask(self) -> optuna.trial.Trial:
        """A new trial. Adaptive: while fewer than `n_initial` runs have completed, the next Sobol point by the
        study's trial count (`design.initial_point`: the same point whichever driver asks, never one again);
        then the GP, seeded by that count (a resumed driver does not replay an earlier driver's proposals)."""
        if self.sweep.design == "adaptive":
            trials = self.study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            completed = sum(t.state == TrialState.COMPLETE for t in trials)
            if not waiting and completed < self.sweep.n_initial:
                self.study.enqueue_trial(design.initial_point(self.sweep, len(trials)))
            self.study.sampler = design.make_sampler(self.sweep, asked=len(trials))
        return self.study.ask(self.dists)

    def _more_to_start(self) -> bool:
        started = len(self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
        if started >= self.total:  # counts every driver's runs in flight (a shared study)
            return False
        return self.sweep.design != "grid" or bool(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def start(self, trial: optuna.trial.Trial, reported: set[int] | None = None, job_id: str | None = None) -> None:
        """Start the trial's run and put it in flight — or, for a trial taken over (`reported`: the probe
        steps it was already told; None for a new trial), reattach to its run when that still goes on
        (`job_id`: what the launcher said when the run started). A run that cannot start is released
        with its reason in its record (module docstring)."""
        resume_ok = reported is not None
        almr, lr = float(trial.params["almr"]), float(trial.params["lr"])
        rid = trial.user_attrs.get("run_id") if resume_ok else None
        if rid is None:
            rid = design.run_id(trial.number, almr, lr)
            trial.set_user_attr("run_id", rid)
        attach = getattr(self.launcher, "attach", None)
        spec = self._spec(rid, almr, lr, resume_ok)
        handle = attach(spec, job_id) if resume_ok and attach is not None else None
        if handle is None:  # a new run (or one nobody runs any more): its folder is prepared
            before = self._prepare(spec)
        else:
            before = self.records[rid].wall_time_s if rid in self.records else 0.0
        trial.set_user_attr("driver", self.name)
        trial.set_user_attr("driver_host", socket.gethostname())
        trial.set_user_attr("driver_pid", os.getpid())
        trial.set_user_attr("poll_s", self.sweep.poll_s)
        active = _Active(trial, spec, time.time(), before, handle)
        _heartbeat(active)
        active.reported = set(reported or ())
        self.by_id[rid] = active
        what = "reattach" if handle is not None else "resume" if spec.resume else "start"
        self.log(f"{what} {rid} (ALMR {almr:.4g}, LR {lr:.3g})")
        if handle is None and resume_ok and _ended_unwatched(spec):  # its driver died before it could tell
            self.log(f"{rid} ended while no driver watched it: recorded from its folder")
            _finish(self.study, active, RunExit(True), self.average, self.base)
            return
        if handle is None:
            try:
                active.handle = self.launcher.start(spec)
            except Exception as err:  # not a failed run: released for the next attempt, which retries it
                self._unstarted(active, f"could not start: {type(err).__name__}: {err}")
                return
            except BaseException:  # interrupted while starting: release the trial for a resume
                trial.set_user_attr("driver", "")
                raise
        self._store_job_id(active)
        self.in_flight.append(active)

    def _unstarted(self, active: _Active, error: str) -> None:
        self.unstarted += 1
        spec = active.spec
        active.trial.set_user_attr("driver", "")
        record = RunRecord(run_id=spec.run_id, almr=spec.almr, lr=spec.lr, status="pending", base_hash=self.base,
                           wall_time_s=active.wall_before, error=error)  # fmt: skip
        record.save(spec.run_dir)
        self.log(f"{spec.run_id}: {error}; launching nothing more (the next `almr sweep` retries it)")

    def _store_job_id(self, active: _Active) -> None:
        """The launcher's id of the run (a Slurm job id, host:pid of a local run) on the trial, for a driver
        that takes it over (`attach`); a resubmitted job changes it."""
        job_id = getattr(self.launcher, "job_id", None)
        current = job_id(active.handle) if job_id is not None else None
        if current is not None and current != active.trial.user_attrs.get("job_id"):
            active.trial.set_user_attr("job_id", current)

    def _spec(self, rid: str, almr: float, lr: float, resume_ok: bool) -> RunSpec:
        """The run's spec (resuming when the folder holds a complete checkpoint); its folder exists after."""
        run_dir = (self.sweep_dir / "runs" / rid).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        point = design.point_config(self.config, almr, lr, str(run_dir))
        resume = resume_ok and any((run_dir / "checkpoints").glob("step_*/complete"))
        return RunSpec(rid, almr, lr, run_dir, point, resume=resume, threads=threads_per_run(self.sweep),
                       final_eval=_final_eval(self.sweep), driver=self.name)  # fmt: skip

    def _prepare(self, spec: RunSpec) -> float:
        """The run's folder with its config.yaml and a `running` record; the wall time it already ran."""
        (spec.run_dir / "config.yaml").write_text(dump_config(spec.config), encoding="utf-8")
        rid = spec.run_id
        before = self.records[rid].wall_time_s if rid in self.records else 0.0
        (spec.run_dir / FINAL_EVAL).unlink(missing_ok=True)  # each attempt evaluates its own final checkpoint
        RunRecord(run_id=rid, almr=spec.almr, lr=spec.lr, status="running", base_hash=self.base,
                  wall_time_s=before).save(spec.run_dir)  # fmt: skip
        return before

    def look(self) -> int:
        """One look at every run in flight: report probes, stop the pruned, settle the ended (removed
        from `in_flight`). Returns how many ended."""
        ended = 0
        for active in list(self.in_flight):
            _heartbeat(active)
            if _check(active, self.average, self.pruning):
                self.launcher.stop(active.handle)
            exit_ = self.launcher.poll(active.handle)
            self._store_job_id(active)  # a Slurm run resubmitted after its time limit has a new job
            if exit_ is not None:
                _check(active, self.average, False)  # report the last probes; a finished run is not pruned
                self.in_flight.remove(active)
                _finish(self.study, active, exit_, self.average, self.base)
                ended += 1
        return ended


def _ended_unwatched(spec: RunSpec) -> bool:
    """A taken-over run whose folder shows it ended (its end event, and its final evaluation when the
    study has one): nothing to run again."""
    ended = any(e.get("event") == "end" for e in read_events(spec.run_dir))
    return ended and (spec.final_eval is None or (spec.run_dir / FINAL_EVAL).is_file())


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (kill, scancel of the driver's own job) and SIGHUP (the SSH session of the driver hung
    up) stop the runs in flight like Ctrl-C and release them: Python's default would end the driver at
    once and leave them running, unwatched. Only the main thread may set a handler (a driver in a
    thread keeps Python's)."""
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


# --------------------------------------------------------------------------- baseline


def write_baseline(sweep_dir: Path, records: list[RunRecord], model: str | None,
                   scores_fn: Callable[[], dict[str, float]] | None) -> dict | None:  # fmt: skip
    """`baseline.json`: the base model's (`model`) held-out loss per source (the step-0 validation every
    run does first; all runs share it) and its probe scores (a step-0 probe event, else `scores_fn()`)."""
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
        scores = scores_fn()
    if not val_loss and not scores:
        return None
    baseline = {"model": model, "val_loss": val_loss, "scores": scores}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(baseline, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return baseline


def check_probe(config: AlmrConfig) -> str | None:
    """Build the runs' probe once, here, before any run starts — its tasks, their data, the token cap
    and every item's length are checked (each run would otherwise fail at its first probe) — refuse an
    `eval.average` the probe cannot produce when it is what ranks the runs, and return the line that
    states the probe's cost at `cpt.probe.every_tokens`; None without a probe."""
    if not config.cpt.probe.every_tokens or not config.model.name_or_path:
        return None
    # torch, transformers and lm-eval load only when a study probes: the dry run and `almr sweep status` never do
    from almr.evaluate.results import check_average_produced
    from almr.stages.cpt import build_probe

    probe = build_probe(config)
    assert probe is not None
    if not config.sweep.final_eval.enabled:
        check_average_produced(config.eval.average, probe.infos, "the probe", "eval.probe.tasks")
    return probe.cost().describe(config.cpt.probe.every_tokens)


def probe_base_model(config: AlmrConfig) -> dict[str, float]:
    """The probe's scores of the base model (model.name_or_path), in this process; {} without a probe."""
    if not config.cpt.probe.every_tokens or not config.model.name_or_path:
        return {}
    import torch
    from transformers import AutoModelForCausalLM

    from almr.stages.cpt import build_probe

    probe = build_probe(config)
    assert probe is not None
    model = AutoModelForCausalLM.from_pretrained(config.model.name_or_path, dtype=torch.float32)
    return dict(probe(model, 0, 0))
