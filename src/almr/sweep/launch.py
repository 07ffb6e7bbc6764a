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
  `MKL_NUM_THREADS` = `spec.threads` (torch sizes its intra-op pool from them at start). The next
  step starts when one exits 0; otherwise the step and the tail of the log are the error. `stop`
  sends SIGTERM to the group of the step running, then SIGKILL after a grace period.
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
"""

import os
import shlex
import signal
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
from almr.sweep.config import SweepConfig, SweepFinalEvalConfig, SweepSlurmConfig
from almr.sweep.final_eval import evaluate_run, final_eval_args

LOG = "run.log"


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


def cpt_command(spec: RunSpec) -> list[str]:
    """`almr cpt` on the run's config, as a module so that the venv's interpreter runs it."""
    cmd = [sys.executable, "-m", "almr.cli", "cpt", str(spec.config_path), "--no-progress"]
    return [*cmd, "--resume"] if spec.resume else cmd


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
    process: subprocess.Popen
    log: Any
    stopped: bool = False


class LocalLauncher:
    def __init__(self, command: Callable[[RunSpec], list[str]] = cpt_command, grace_s: float = 10.0,
                 final_eval: Callable[[RunSpec], list[str]] = final_eval_command) -> None:  # fmt: skip
        self.command = command
        self.grace_s = grace_s
        self.final_eval = final_eval

    def steps(self, spec: RunSpec) -> list[tuple[str, list[str]]]:
        """The run's commands in order: training, then the final evaluation when asked for."""
        steps = [("training", self.command(spec))]
        return steps + ([("final evaluation", self.final_eval(spec))] if spec.final_eval else [])

    def start(self, spec: RunSpec) -> _Local:
        log = (spec.run_dir / LOG).open("a", encoding="utf-8")
        steps = self.steps(spec)
        return _Local(spec, steps, self._spawn(spec, steps[0][1], log), log)

    def _spawn(self, spec: RunSpec, command: list[str], log: Any) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS=str(spec.threads), MKL_NUM_THREADS=str(spec.threads))
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        log.flush()
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def poll(self, handle: _Local) -> RunExit | None:
        code = handle.process.poll()
        if code is None:
            return None
        what = handle.steps[0][0]
        if code == 0 and len(handle.steps) > 1 and not handle.stopped:
            handle.steps = handle.steps[1:]
            handle.process = self._spawn(handle.spec, handle.steps[0][1], handle.log)
            return None
        handle.log.close()
        if code == 0:
            return RunExit(True)
        failed = "" if what == "training" else f"{what} failed: "
        return RunExit(False, f"{failed}exit code {code}; last lines of {handle.spec.run_dir / LOG}:\n" + log_tail(
            handle.spec.run_dir / LOG))  # fmt: skip

    def stop(self, handle: _Local) -> None:
        handle.stopped = True  # no further step starts, even if this one has just ended
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


def torchrun_command(spec: RunSpec, slurm: SweepSlurmConfig) -> str:
    """The shell command each node's task runs; `$SLURM_*` are expanded inside the job. The final
    evaluation is one process on the first node, after torchrun has ended on every node."""
    run_dir = shlex.quote(str(spec.run_dir))
    head = '$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)'
    resume = f"$(ls {run_dir}/checkpoints/step_*/complete >/dev/null 2>&1 && echo --resume)"
    train = (
        f"torchrun --nnodes {slurm.nodes} --nproc_per_node {slurm.gpus_per_node} --rdzv_backend c10d "
        f'--rdzv_endpoint "{head}:{slurm.rdzv_port}" --rdzv_id "$SLURM_JOB_ID" '
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
        "setup": [*slurm.setup, f"export ALMR_RUN_COMMAND={shlex.quote(torchrun_command(spec, slurm))}"],
    }
    for key, value in (("partition", slurm.partition), ("account", slurm.account),
                       ("cpus_per_task", slurm.cpus_per_task)):  # fmt: skip
        if value is not None:
            params[key] = value
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
            env = f"OMP_NUM_THREADS={spec.threads}"
            steps = [cpt_command(spec)] + ([final_eval_command(spec)] if spec.final_eval else [])
            lines.append(" && ".join(f"{env} {shlex.join(step)}" for step in steps))
    what = "all runs" if sweep.design == "grid" else "the first runs in flight"
    return [*lines, f"dry run: {len(specs)} run(s) ({what}); nothing launched"]


def run_exported_command() -> None:
    """What each Slurm task executes: the command its sbatch script exported (see the module doc)."""
    command = os.environ["ALMR_RUN_COMMAND"]
    subprocess.run(["bash", "-c", command], check=True)


@dataclass
class _Job:
    spec: RunSpec
    job: Any


class SlurmLauncher:
    def __init__(self, slurm: SweepSlurmConfig, folder: Path) -> None:
        self.slurm = slurm
        self.folder = Path(folder)

    def start(self, spec: RunSpec) -> _Job:
        executor = submitit.SlurmExecutor(folder=self.folder / "%j")
        executor.update_parameters(**slurm_parameters(spec, self.slurm))
        return _Job(spec, executor.submit(run_exported_command))

    def poll(self, handle: _Job) -> RunExit | None:
        if not handle.job.done():
            return None
        try:
            handle.job.result()
        except Exception as err:  # the job's traceback or Slurm's reason (timeout, node failure)
            return RunExit(False, f"Slurm job {handle.job.job_id}: {str(err)[-2000:]}")
        return RunExit(True)

    def stop(self, handle: _Job) -> None:
        handle.job.cancel(check=False)
