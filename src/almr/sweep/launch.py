"""Launchers: how one point of a sweep runs. Each point is one CPT run in its own folder.

Contract: a launcher has `start(spec) -> handle`, `poll(handle) -> RunExit | None` (None while the
run goes on) and `stop(handle)` (end the run now; used for early stopping and on interruption).
The sweep driver (`almr.sweep.study`) watches `spec.run_dir/metrics.jsonl` between polls, so a
launcher needs to know nothing about probes or pruning.

With `sweep.final_eval` on (`spec.final_eval`), a run is two steps in the same job: training,
then `python -m almr.cli sweep final-eval RUN/config.yaml --suite … --tasks … --limit …`, which
writes RUN/final_eval.json; a run whose final evaluation fails is a failed run with its error.

- `LocalLauncher`: each step is a subprocess — `python -m almr.cli cpt RUN/config.yaml
  --no-progress [--resume]` (or `command(spec)`), then the final evaluation when asked for — in its
  own process group, stdout+stderr appended to `RUN/run.log`, with `OMP_NUM_THREADS`/
  `MKL_NUM_THREADS` = `spec.threads` (torch sizes its intra-op pool from them at start). With
  `gpus_per_run` > 0 the launcher shares `gpus` out into disjoint slots: a run gets a free slot's
  GPUs as `CUDA_VISIBLE_DEVICES` and trains under `python -m torch.distributed.run --nnodes 1
  --nproc_per_node G --rdzv_backend c10d --rdzv_endpoint 127.0.0.1:PORT` with a port free at launch
  (`spec.gpus`, `spec.port`); with 0 (no GPUs) a run is one plain process, as before. The next step
  starts when one exits 0; otherwise the step and the tail of the log are the error. `stop` sends
  SIGTERM to the group of the step running, then SIGKILL after a grace period.
- **The run folder's owner** (`RUN/owner.lock`, `RUN/owner.json`): a local run holds an exclusive
  `flock` on `RUN/owner.lock` from its start to its end — taken by the driver and inherited by the
  run's processes, so it outlives a driver killed with SIGKILL and is released by the kernel when
  the last of them ends; `RUN/owner.json` names the holder (host, driver pid, run pid, driver id,
  command). `start` refuses a folder whose lock is held (`RunFolderBusy`, with the owner), so two
  processes never own one run folder; `attach(spec, job_id)` takes over a run whose process still
  holds the lock (the driver died, its run did not): the run is watched until the lock is free,
  then judged by its metrics.jsonl (and its final evaluation, which then follows here).
- `FunctionLauncher(run_fn, final_eval=evaluate_spec)`: runs `run_fn(spec, should_stop)` in this
  process, to completion, inside `start` — for tests and the benchmark's synthetic objective —
  then `final_eval(spec)` when asked for and not stopped. `run_fn` writes metrics.jsonl like
  `almr cpt` and calls `should_stop()` after each probe event; True means the driver pruned it and
  it must return. An exception is a failed run.
- `SlurmLauncher`: each run is a submitit job with `slurm.nodes` nodes, one task per node, each task
  running `torchrun --nnodes N --nproc_per_node G --rdzv_backend c10d --rdzv_endpoint HEAD:PORT
  -m almr.cli cpt RUN/config.yaml` (`--resume` added at job start when a complete checkpoint
  exists, so a requeued or resubmitted job continues), then on the first node only (one process,
  after every node finished training) the final evaluation. The command is exported into the
  sbatch script (`ALMR_RUN_COMMAND`) and the submitted function only executes it, so
  `sbatch_script` — what `--dry-run` prints — shows exactly what runs. It is rendered by
  submitit's own `_make_sbatch_string`, the function its `SlurmExecutor` writes the script with.
  Each job's rendezvous port is `slurm.rdzv_port + SLURM_JOB_ID % 10000` (runs sharing a node never
  share a port); `--cpus-per-task`, `--mem`, `--exclusive` come from `sweep.slurm`. With
  `slurm.requeue` the job is requeueable (`--requeue`): submitit's timeout signal (`--signal=USR2@
  signal_s`) requeues it (`RunCommand` is a `submitit.helpers.Checkpointable`; the training process
  ignores the signal) and the requeued job resumes from its newest complete checkpoint; a job that
  still ends in TIMEOUT is resubmitted (`--resume` follows from its checkpoint), up to
  `slurm.max_requeues` times. `job_id(handle)` is the Slurm job id the driver stores (trial user
  attr `job_id`), and `attach(spec, job_id)` reattaches to that job (`submitit.SlurmJob`) when a
  new driver takes the run over, instead of submitting it a second time.
"""

import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import submitit
from submitit.slurm import slurm as submitit_slurm

from almr.config import AlmrConfig
from almr.errors import AlmrError
from almr.sweep.config import SweepConfig, SweepFinalEvalConfig, SweepSlurmConfig
from almr.sweep.final_eval import evaluate_run, final_eval_args
from almr.sweep.records import FINAL_EVAL, read_events

LOG = "run.log"
OWNER_LOCK = "owner.lock"  # flock held by a local run's driver and processes (module docstring)
OWNER = "owner.json"  # who holds it


@dataclass
class RunSpec:
    """One point of the study, ready to run: its config is already written to `config_path`."""

    run_id: str
    almr: float
    lr: float
    run_dir: Path
    config: AlmrConfig
    resume: bool = False
    threads: int = 1
    final_eval: SweepFinalEvalConfig | None = None  # evaluate the final checkpoint after training
    gpus: list[int] | None = None  # local launcher: the GPUs of the run's slot (CUDA_VISIBLE_DEVICES)
    port: int | None = None  # local launcher with GPUs: torchrun's rendezvous port
    driver: str = ""  # the id of the driver that runs it (RUN/owner.json)

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.yaml"


@dataclass
class RunExit:
    ok: bool
    error: str | None = None


class Launcher(Protocol):
    def start(self, spec: RunSpec) -> Any: ...
    def poll(self, handle: Any) -> RunExit | None: ...
    def stop(self, handle: Any) -> None: ...


class RunFolderBusy(AlmrError):
    """A run folder another live process owns (RUN/owner.lock is held)."""


def cpt_command(spec: RunSpec) -> list[str]:
    """`almr cpt` on the run's config, as a module so that the venv's interpreter runs it; under torchrun
    (one process per GPU of the run's slot, a c10d rendezvous on `spec.port`) when the run has GPUs."""
    cmd = ["-m", "almr.cli", "cpt", str(spec.config_path), "--no-progress", *(["--resume"] if spec.resume else [])]
    if not spec.gpus:
        return [sys.executable, *cmd]
    torchrun = ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(len(spec.gpus)),
                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{spec.port}",
                "--rdzv_id", spec.run_id]  # fmt: skip
    return [sys.executable, *torchrun, *cmd]


def run_env(spec: RunSpec) -> dict[str, str]:
    """The variables a local run's processes get on top of the driver's environment."""
    env = {"OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads)}
    if spec.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpus)
    return env


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's choice), for a run's torchrun rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gpu_slots(gpus: Sequence[int], gpus_per_run: int, parallel: int) -> list[list[int]]:
    """`parallel` disjoint sets of `gpus_per_run` GPUs from `gpus`, in order (slot i: the i-th set)."""
    return [list(gpus[i * gpus_per_run : (i + 1) * gpus_per_run]) for i in range(parallel)]


def owner(run_dir: Path) -> dict[str, Any]:
    """Who holds the run folder (RUN/owner.json); {} when nobody wrote it."""
    try:
        return json.loads((Path(run_dir) / OWNER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def describe_owner(run_dir: Path) -> str:
    who = owner(run_dir)
    if not who:
        return "a process that left no owner.json"
    return (f"driver {who.get('driver', '?')[:12]} (pid {who.get('driver_pid', '?')}) on {who.get('host', '?')}, "
            f"run pid {who.get('run_pid', '?')}, since {who.get('started', '?')}")  # fmt: skip


def lock_run_folder(run_dir: Path) -> int | None:
    """An fd holding the exclusive lock on RUN/owner.lock, or None when another process holds it."""
    fd = os.open(Path(run_dir) / OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def folder_is_owned(run_dir: Path) -> bool:
    """Whether a live process holds the run folder's lock (a run of a driver that died, still running)."""
    if not (Path(run_dir) / OWNER_LOCK).is_file():
        return False
    fd = lock_run_folder(run_dir)
    if fd is None:
        return True
    os.close(fd)
    return False


def final_eval_command(spec: RunSpec, python: str = sys.executable) -> list[str]:
    """`almr sweep final-eval` on the run's config with the sweep's final-eval settings."""
    assert spec.final_eval is not None
    return [python, "-m", "almr.cli", "sweep", "final-eval", str(spec.config_path), *final_eval_args(spec.final_eval)]


def evaluate_spec(spec: RunSpec) -> None:
    """The final evaluation of a run, in this process (FunctionLauncher's default)."""
    assert spec.final_eval is not None
    evaluate_run(spec.config, spec.final_eval)


def log_tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- local subprocesses


@dataclass
class _Local:
    spec: RunSpec
    steps: list[tuple[str, list[str]]]  # (what, command line), run one after the other
    process: subprocess.Popen | None  # None: a run taken over from a dead driver (watched by its lock)
    log: Any
    lock: int  # fd of RUN/owner.lock, held until the run has ended
    slot: int | None = None
    stopped: bool = False


class LocalLauncher:
    def __init__(self, command: Callable[[RunSpec], list[str]] = cpt_command, grace_s: float = 10.0,
                 final_eval: Callable[[RunSpec], list[str]] = final_eval_command,
                 gpus: Sequence[int] = (), gpus_per_run: int = 0, parallel: int = 1) -> None:  # fmt: skip
        self.command = command
        self.grace_s = grace_s
        self.final_eval = final_eval
        self.slots = gpu_slots(gpus, gpus_per_run, parallel) if gpus_per_run else []
        self.busy: set[int] = set()

    def steps(self, spec: RunSpec) -> list[tuple[str, list[str]]]:
        """The run's commands in order: training, then the final evaluation when asked for."""
        steps = [("training", self.command(spec))]
        return steps + ([("final evaluation", self.final_eval(spec))] if spec.final_eval else [])

    def start(self, spec: RunSpec) -> _Local:
        lock = lock_run_folder(spec.run_dir)
        if lock is None:
            raise RunFolderBusy(f"{spec.run_dir} is owned by {describe_owner(spec.run_dir)}; not started twice")
        slot = None
        if self.slots:
            slot = min(set(range(len(self.slots))) - self.busy)
            self.busy.add(slot)
            spec.gpus, spec.port = self.slots[slot], free_port()
        log = (spec.run_dir / LOG).open("a", encoding="utf-8")
        steps = self.steps(spec)
        handle = _Local(spec, steps, None, log, lock, slot)
        handle.process = self._spawn(handle, steps[0][1])
        return handle

    def attach(self, spec: RunSpec, job_id: str | None = None) -> _Local | None:
        """Take over a run whose processes outlived their driver: still running (RUN/owner.lock held), it
        is watched until the lock is free; ended while nobody watched (its end event), it is judged now.
        Its final evaluation follows unless RUN/final_eval.json is there. None: start it anew."""
        if not folder_is_owned(spec.run_dir) and not _ended(spec.run_dir):
            return None
        fd = os.open(spec.run_dir / OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        log = (spec.run_dir / LOG).open("a", encoding="utf-8")
        evaluated = (spec.run_dir / FINAL_EVAL).is_file()
        steps = [s for s in self.steps(spec) if s[0] != "training" and not evaluated]
        return _Local(spec, [("training", []), *steps], None, log, fd)

    def job_id(self, handle: _Local) -> str | None:
        pid = handle.process.pid if handle.process is not None else owner(handle.spec.run_dir).get("run_pid")
        return f"{socket.gethostname()}:{pid}" if pid else None

    def _spawn(self, handle: _Local, command: list[str]) -> subprocess.Popen:
        spec = handle.spec
        env = dict(os.environ, **run_env(spec))
        handle.log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        handle.log.flush()
        # the run's processes inherit the folder's lock (pass_fds): it is held while any of them lives
        process = subprocess.Popen(command, stdout=handle.log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, pass_fds=(handle.lock,))  # fmt: skip
        who = {"host": socket.gethostname(), "driver": spec.driver, "driver_pid": os.getpid(),
               "run_pid": process.pid, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command}  # fmt: skip
        tmp = spec.run_dir / f"{OWNER}.tmp"
        tmp.write_text(json.dumps(who) + "\n", encoding="utf-8")
        os.replace(tmp, spec.run_dir / OWNER)
        return process

    def poll(self, handle: _Local) -> RunExit | None:
        if handle.process is None:  # taken over: running while its processes hold the lock
            fd = lock_run_folder(handle.spec.run_dir)
            if fd is None:
                return None
            os.close(handle.lock)
            handle.lock = fd  # ours now, for the steps that follow
            code = 0 if _ended(handle.spec.run_dir) else 1
            if code:
                return self._close(handle, RunExit(False, "the run of a driver that died ended without its end "
                                                   f"event; last lines of {handle.spec.run_dir / LOG}:\n"
                                                   + log_tail(handle.spec.run_dir / LOG)))  # fmt: skip
        else:
            code = handle.process.poll()
            if code is None:
                return None
        what = handle.steps[0][0]
        if code == 0 and len(handle.steps) > 1 and not handle.stopped:
            handle.steps = handle.steps[1:]
            handle.process = self._spawn(handle, handle.steps[0][1])
            return None
        if code == 0:
            return self._close(handle, RunExit(True))
        failed = "" if what == "training" else f"{what} failed: "
        log = handle.spec.run_dir / LOG
        return self._close(handle, RunExit(False, f"{failed}exit code {code}; last lines of {log}:\n" + log_tail(log)))

    def _close(self, handle: _Local, exit_: RunExit) -> RunExit:
        handle.log.close()
        (handle.spec.run_dir / OWNER).unlink(missing_ok=True)
        os.close(handle.lock)  # the folder is free
        if handle.slot is not None:
            self.busy.discard(handle.slot)
        return exit_

    def stop(self, handle: _Local) -> None:
        handle.stopped = True  # no further step starts, even if this one has just ended
        if handle.process is None:  # taken over: signal the group its owner.json names, while it holds the lock
            pid = owner(handle.spec.run_dir).get("run_pid")
            if pid and folder_is_owned_by_others(handle):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGTERM)
            return
        if handle.process.poll() is not None:
            return
        # The run is the leader of its own process group (start_new_session): signal the group so
        # that anything it started (data workers) ends with it.
        os.killpg(handle.process.pid, signal.SIGTERM)
        try:
            handle.process.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(handle.process.pid, signal.SIGKILL)
            handle.process.wait()


def folder_is_owned_by_others(handle: _Local) -> bool:
    """Whether the processes of a taken-over run still hold its lock: our own fd on the lock file is a
    second open file description, so a non-blocking lock through a fresh fd tells."""
    return folder_is_owned(handle.spec.run_dir)


def _ended(run_dir: Path) -> bool:
    return any(e.get("event") == "end" for e in read_events(run_dir))


# --------------------------------------------------------------------------- in-process function


@dataclass
class _Done:
    spec: RunSpec
    exit: RunExit


class FunctionLauncher:
    def __init__(self, run_fn: Callable[[RunSpec, Callable[[], bool]], None],
                 final_eval: Callable[[RunSpec], None] = evaluate_spec) -> None:  # fmt: skip
        self.run_fn = run_fn
        self.final_eval = final_eval
        self.should_stop: Callable[[RunSpec], bool] = lambda spec: False  # set by the driver

    def start(self, spec: RunSpec) -> _Done:
        try:
            self.run_fn(spec, lambda: self.should_stop(spec))
        except Exception as err:  # a crashing objective is a failed run, reported with its error
            return _Done(spec, RunExit(False, f"{type(err).__name__}: {err}"))
        if spec.final_eval is None or self.should_stop(spec):  # a pruned run is not evaluated
            return _Done(spec, RunExit(True))
        try:
            self.final_eval(spec)
        except Exception as err:
            return _Done(spec, RunExit(False, f"final evaluation failed: {type(err).__name__}: {err}"))
        return _Done(spec, RunExit(True))

    def poll(self, handle: _Done) -> RunExit | None:
        return handle.exit

    def stop(self, handle: _Done) -> None:
        pass


# --------------------------------------------------------------------------- Slurm (submitit)


def rdzv_port_expr(slurm: SweepSlurmConfig) -> str:
    """The job's rendezvous port, computed inside the job: distinct for jobs that share a node."""
    return f"$(( {slurm.rdzv_port} + SLURM_JOB_ID % 10000 ))"


def torchrun_command(spec: RunSpec, slurm: SweepSlurmConfig) -> str:
    """The shell command each node's task runs; `$SLURM_*` are expanded inside the job. The final
    evaluation is one process on the first node, after torchrun has ended on every node."""
    run_dir = shlex.quote(str(spec.run_dir))
    head = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
    resume = f"$(ls {run_dir}/checkpoints/step_*/complete >/dev/null 2>&1 && echo --resume)"
    train = (
        f"torchrun --nnodes {slurm.nodes} --nproc_per_node {slurm.gpus_per_node} --rdzv_backend c10d "
        f'--rdzv_endpoint "{head}:{rdzv_port_expr(slurm)}" --rdzv_id "$SLURM_JOB_ID" '
        f"-m almr.cli cpt {shlex.quote(str(spec.config_path))} --no-progress {resume}"
    )
    if spec.final_eval is None:
        return train
    evaluate = shlex.join(final_eval_command(spec, python="python"))  # the job's python (sweep.slurm.setup)
    return f'{train} && if [ "${{SLURM_NODEID:-0}}" = 0 ]; then {evaluate}; fi'


def slurm_parameters(spec: RunSpec, slurm: SweepSlurmConfig) -> dict[str, Any]:
    """SlurmExecutor parameters of one run's job (also what the dry-run renders)."""
    params: dict[str, Any] = {
        "job_name": f"almr-{spec.run_id}",
        "nodes": slurm.nodes,
        "ntasks_per_node": 1,  # torchrun starts the GPU processes of its node
        "gpus_per_node": slurm.gpus_per_node,
        "time": slurm.time_min,
        "signal_delay_s": slurm.signal_s,
        "setup": [*slurm.setup, f"export ALMR_RUN_COMMAND={shlex.quote(torchrun_command(spec, slurm))}"],
    }
    for key, value in (("partition", slurm.partition), ("account", slurm.account),
                       ("cpus_per_task", slurm.cpus_per_task), ("mem", slurm.mem)):  # fmt: skip
        if value is not None:
            params[key] = value
    if slurm.exclusive:
        params["exclusive"] = True
    if slurm.requeue:
        params["additional_parameters"] = {"requeue": True}
    return params


def sbatch_script(spec: RunSpec, slurm: SweepSlurmConfig, folder: Path, python: str = sys.executable) -> str:
    """The sbatch script submitit would submit for this run (submitit's own renderer)."""
    command = " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    # submitit has no public way to render a script without submitting it: `_make_sbatch_string` is
    # the function its SlurmExecutor writes the script with, so the dry run shows exactly what runs
    return submitit_slurm._make_sbatch_string(command=command, folder=folder, **slurm_parameters(spec, slurm))


def dry_run_lines(specs: Sequence[RunSpec], sweep: SweepConfig) -> list[str]:
    """What `almr sweep --dry-run` prints: how each run would start (its command line, or its sbatch
    script under Slurm), then a line that says how many and that nothing was launched."""
    lines = []
    for spec in specs:
        if sweep.launcher == "slurm":
            folder = Path(sweep.sweep_dir).resolve() / "slurm" / "%j"
            lines += [f"# {spec.run_id}", sbatch_script(spec, sweep.slurm, folder)]
        else:
            env = " ".join(f"{k}={v}" for k, v in run_env(spec).items() if k != "MKL_NUM_THREADS")
            steps = [cpt_command(spec)] + ([final_eval_command(spec)] if spec.final_eval else [])
            lines.append(" && ".join(f"{env} {shlex.join(step)}" for step in steps))
    what = "all runs" if sweep.design == "grid" else "the first runs in flight"
    return [*lines, f"dry run: {len(specs)} run(s) ({what}); nothing launched"]


def run_exported_command(started: Callable[[subprocess.Popen], None] | None = None) -> None:
    """What each Slurm task executes: the command its sbatch script exported (see the module doc), in a
    session of its own. The command ignores SIGUSR2, submitit's timeout signal, which the job's Python
    process handles (`RunCommand.checkpoint`); the trainer installs its own handler, which overrides
    that (almr.train.preempt)."""

    def ignore_usr2() -> None:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    child = subprocess.Popen(["bash", "-c", os.environ["ALMR_RUN_COMMAND"]], preexec_fn=ignore_usr2,
                             start_new_session=True)  # fmt: skip
    if started is not None:
        started(child)
    # polled, not waited on: a blocking wait holds the Popen's lock, and submitit's signal handler
    # (RunCommand.checkpoint) must be able to wait for the child itself
    while child.poll() is None:
        time.sleep(0.5)
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, os.environ["ALMR_RUN_COMMAND"])


class RunCommand(submitit.helpers.Checkpointable):
    """`run_exported_command` as a submitit Checkpointable: on the timeout signal submitit calls
    `checkpoint`, which passes SIGUSR2 on to the training processes — they save a checkpoint at the end
    of the step they are in and exit (almr.train.preempt) — waits up to `save_wait_s` for them, and
    requeues the job with this same callable, which resumes from that checkpoint."""

    def __init__(self, save_wait_s: float = 60.0) -> None:
        self.save_wait_s = save_wait_s
        self._child: subprocess.Popen | None = None

    def __call__(self) -> None:
        run_exported_command(started=self._remember)

    def _remember(self, child: subprocess.Popen) -> None:
        self._child = child

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        child = self._child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGUSR2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=self.save_wait_s)
        self._child = None  # a Popen does not pickle into the requeued job
        return super().checkpoint(*args, **kwargs)


@dataclass
class _Job:
    spec: RunSpec
    job: Any
    resubmits: int = 0


class SlurmLauncher:
    def __init__(self, slurm: SweepSlurmConfig, folder: Path) -> None:
        self.slurm = slurm
        self.folder = Path(folder)

    def _submit(self, spec: RunSpec) -> Any:
        executor = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=self.slurm.max_requeues)
        executor.update_parameters(**slurm_parameters(spec, self.slurm))
        # the trainer's checkpoint must be written before the time limit: most of the warning, some margin
        wait = max(10.0, self.slurm.signal_s - 30.0)
        return executor.submit(RunCommand(wait) if self.slurm.requeue else run_exported_command)

    def start(self, spec: RunSpec) -> _Job:
        return _Job(spec, self._submit(spec))

    def attach(self, spec: RunSpec, job_id: str | None) -> _Job | None:
        """The job a dead driver submitted for this run, when Slurm still runs or queues it; else None."""
        if not job_id:
            return None
        job = submitit.SlurmJob(folder=self.folder / "%j", job_id=job_id)
        if job.done(force_check=True):
            return None  # ended while nobody watched: the run is settled from its folder or started anew
        return _Job(spec, job)

    def job_id(self, handle: _Job) -> str | None:
        return str(handle.job.job_id)

    def poll(self, handle: _Job) -> RunExit | None:
        if not handle.job.done():
            return None
        state = str(handle.job.state)
        if state.startswith("TIMEOUT") and handle.resubmits < self.slurm.max_requeues and self.slurm.requeue:
            # ran out of time even after its requeues: a new job continues from its newest checkpoint
            handle.resubmits += 1
            handle.job = self._submit(handle.spec)
            return None
        try:
            handle.job.result()
        except Exception as err:  # the job's traceback or Slurm's reason (timeout, node failure)
            return RunExit(False, f"Slurm job {handle.job.job_id} ({state}): {str(err)[-2000:]}")
        return RunExit(True)

    def stop(self, handle: _Job) -> None:
        handle.job.cancel(check=False)
