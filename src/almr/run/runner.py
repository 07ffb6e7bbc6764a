"""`almr run`: the pipeline's stages in order, each skipped when done, rerun when what it reads has
changed (saying which key or input), resumed when it was interrupted.

A stage (`Stage`) names the config keys it reads, the stages whose outputs it needs, and a
function that makes its outputs under `OUT/<stage>/`. When it ends well the runner writes
`OUT/<stage>/stage.json` (docs/pipeline.md):

    {"stage", "fingerprint", "inputs": {stage: fingerprint}, "config": {key: value}, "status": "done",
     "started", "finished", "seconds", "outputs": {name: path relative to OUT/<stage>}}

Its status is `running` while the stage runs (a process killed mid-stage leaves it so), `failed`
or `interrupted` when it stopped. A stage is *done* when its status is done and its fingerprint
(`fingerprint.py`: its config keys + its inputs' fingerprints) is the one computed now; *stale*
when the fingerprint differs (its folder is cleared and it runs again); *resume* when it stopped
with the same fingerprint (it runs again with `resume=True`: trainers continue from their newest
checkpoint, the study from its records); *todo* otherwise.

The stage table is data (`almr.run.stages.STAGES` for the paper's pipeline): tests inject their
own tiny stages.
"""

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from almr.durable import atomic_write_text
from almr.errors import AlmrError, ConfigError
from almr.processes import is_main_process
from almr.run.display import Display, MetricsWatcher
from almr.run.fingerprint import changes, fingerprint, read_keys
from almr.run.logs import StageLog, captured, tail

STAGE_FILE = "stage.json"
LOG_FILE = "log.txt"
Kind = Literal["cpu", "train", "finetune", "study", "gpu"]


@dataclass
class StageContext:
    """What a stage's function receives."""

    config: Any  # the whole AlmrConfig (a stage reads only its own keys: those its fingerprint covers)
    out: Path  # the pipeline's folder
    dir: Path  # OUT/<stage>
    inputs: dict[str, dict[str, Any]]  # input stage → its stage.json (done)
    resume: bool  # the stage stopped before with the same fingerprint: continue it
    say: Callable[[str], None]  # one of almr's own lines: terminal and log
    progress: Callable[[int, int | None, str], None]  # (done, total, unit) when the stage counts itself
    config_ref: str = "CONFIG"  # how the user named the config (a preset, a file), for commands it suggests

    def input_path(self, stage: str, output: str) -> Path:
        """The path of output `output` of input stage `stage`."""
        record = self.inputs.get(stage)
        if record is None:
            raise AlmrError(f"stage {self.dir.name} reads {stage}, which is not among its inputs")
        if output not in record["outputs"]:
            raise AlmrError(f"stage {stage} has no output {output!r} (it has: {', '.join(record['outputs'])})")
        return self.out / stage / record["outputs"][output]

    def has_input(self, stage: str) -> bool:
        return stage in self.inputs


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline."""

    name: str
    reads: tuple[str, ...]  # dotted config keys: "cpt", "world.model", "eval.probe"
    inputs: tuple[str, ...]  # stages whose outputs it needs
    run: Callable[[StageContext], Mapping[str, str]]  # returns {output name: path relative to OUT/<stage>}
    outputs: str = ""  # what it makes, in words (for --dry-run and the docs)
    command: str = ""  # the standalone command it equals, e.g. "almr cpt CONFIG"
    optional: tuple[str, ...] = ()  # stages it reads when they are done (the report)
    kind: Kind = "cpu"


@dataclass
class StageState:
    stage: Stage
    fingerprint: str
    state: Literal["done", "stale", "resume", "todo"]
    reasons: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None


class StageFailed(AlmrError):
    """A stage raised: the pipeline stopped there (exit code 1, not 2: not the user's input)."""


def read_record(out: Path, name: str) -> dict[str, Any] | None:
    path = out / name / STAGE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # cut short by a kill while written: the stage counts as never finished


def _write_record(out: Path, name: str, record: dict[str, Any]) -> None:
    # under torchrun or accelerate (a training stage's job) every process runs the stage; the first
    # alone clears its folder and keeps its record
    if is_main_process():
        atomic_write_text(out / name / STAGE_FILE, json.dumps(record, indent=1, ensure_ascii=False) + "\n")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Pipeline:
    """The stages of `stages` (in order) over `config`, in the folder `out`. `rerun` is the
    command line that reruns the pipeline (`almr run demo --out OUT`), for messages."""

    def __init__(self, stages: Sequence[Stage], config: BaseModel, out: Path, rerun: str = "almr run CONFIG",
                 config_ref: str = "CONFIG") -> None:  # fmt: skip
        self.stages = list(stages)
        self.by_name = {s.name: s for s in self.stages}
        if len(self.by_name) != len(self.stages):
            raise AlmrError("two stages share a name")
        for stage in self.stages:
            before = {s.name for s in self.stages[: self.stages.index(stage)]}
            for name in (*stage.inputs, *stage.optional):
                if name not in before:
                    raise AlmrError(f"stage {stage.name} reads {name}, which is not a stage before it")
        self.config = config
        self.dumped = config.model_dump(mode="json")  # once: every fingerprint reads from it
        self.out = Path(out)
        self.rerun = rerun
        self.config_ref = config_ref

    # ------------------------------------------------------------------ selection

    def select(self, only: Sequence[str] = (), start: str | None = None, until: str | None = None) -> list[str]:
        """The stages to consider, in order: `only` those, or from `start` to `until` (inclusive)."""
        names = [s.name for s in self.stages]
        for name in [*only, *(x for x in (start, until) if x)]:
            if name not in self.by_name:
                raise ConfigError(f"no stage named {name!r}; the stages are: {', '.join(names)}")
        if only and (start or until):
            raise ConfigError("--only picks the stages itself; use it without --from/--until")
        if only:
            return [n for n in names if n in only]
        first = names.index(start) if start else 0
        last = names.index(until) if until else len(names) - 1
        if first > last:
            raise ConfigError(f"--from {start} comes after --until {until} (order: {', '.join(names)})")
        return names[first : last + 1]

    # ------------------------------------------------------------------ states

    def states(self, selected: Sequence[str] | None = None) -> dict[str, StageState]:
        """Every stage's fingerprint and state now. An optional input counts when it is done or
        among `selected` (it will be by the time its reader runs)."""
        selected = set(selected or [])
        out: dict[str, StageState] = {}
        for stage in self.stages:
            inputs = {name: out[name].fingerprint for name in stage.inputs}
            for name in stage.optional:
                if out[name].state == "done" or name in selected:
                    inputs[name] = out[name].fingerprint
            values = read_keys(self.dumped, stage.reads)
            fp = fingerprint(values, inputs)
            record = read_record(self.out, stage.name)
            if record is None:
                out[stage.name] = StageState(stage, fp, "todo", record=None)
            elif record.get("fingerprint") == fp:
                state = "done" if record.get("status") == "done" else "resume"
                reasons = [] if state == "done" else [f"{record.get('status', 'stopped')} before; continues"]
                out[stage.name] = StageState(stage, fp, state, reasons, record)
            else:
                reasons = [f"config {k} changed ({a} → {b})" for k, a, b in changes(record.get("config", {}), values)]
                before = record.get("inputs", {})
                reasons += [f"input {n} changed" for n in sorted(set(before) | set(inputs))
                            if before.get(n) != inputs.get(n)]  # fmt: skip
                out[stage.name] = StageState(stage, fp, "stale", reasons or ["fingerprint changed"], record)
        return out

    def check_inputs(self, selected: Sequence[str], states: Mapping[str, StageState]) -> None:
        """Refuse a selection with a stage whose input is neither done nor made earlier in this run."""
        will_be_done = {n for n, s in states.items() if s.state == "done"} | set(selected)
        for name in selected:
            for needed in self.by_name[name].inputs:
                if needed not in will_be_done:
                    why = "is stale" if states[needed].state == "stale" else "has not run"
                    raise ConfigError(
                        f"stage {name} needs the output of stage {needed}, which {why} and is not selected; run it "
                        f"first ({self.rerun} --until {needed}) or add it to the selection (--from {needed})"
                    )

    # ------------------------------------------------------------------ running

    def run(self, selected: Sequence[str], display: Display) -> dict[str, StageState]:
        """Run the selected stages that are not done, in order; raises StageFailed at the first
        that fails (its log's tail and the command to rerun it in the message)."""
        states = self.states(selected)
        self.check_inputs(selected, states)
        for name in selected:
            state = states[name]
            if state.state == "done":
                display.say(f"{name}: done, skipped (fingerprint {state.fingerprint[:12]})")
                display.finish(name, "skipped")
                continue
            if state.state == "stale":
                display.say(f"{name}: reruns: " + "; ".join(state.reasons))
                if is_main_process():
                    self._clear(name)
            elif state.state == "resume":
                display.say(f"{name}: resumes ({state.reasons[0]})")
            self._run_one(state, display)
            states = self.states(selected)  # this stage's rerun changes the fingerprints below it
        return states

    def _clear(self, name: str) -> None:
        folder = self.out / name
        if folder.is_dir():
            shutil.rmtree(folder)

    def _await_first_process(self, name: str, fingerprint: str, timeout_s: float = 600.0) -> None:
        """Wait until the first process has cleared the stage's folder (when stale) and written its
        record for `fingerprint`: the others must not start in a folder it is about to clear."""
        deadline = time.monotonic() + timeout_s
        while (read_record(self.out, name) or {}).get("fingerprint") != fingerprint:
            if time.monotonic() > deadline:
                raise AlmrError(f"stage {name}: the first process did not start it within {timeout_s:.0f} s")
            time.sleep(0.2)

    def _run_one(self, state: StageState, display: Display) -> None:
        stage = state.stage
        if not is_main_process():
            self._await_first_process(stage.name, state.fingerprint)
        folder = self.out / stage.name
        folder.mkdir(parents=True, exist_ok=True)
        inputs = {name: read_record(self.out, name) for name in (*stage.inputs, *stage.optional)}
        done_inputs = {n: r for n, r in inputs.items() if r is not None and r.get("status") == "done"}
        record: dict[str, Any] = {
            "stage": stage.name, "fingerprint": state.fingerprint,
            "inputs": {n: r["fingerprint"] for n, r in done_inputs.items()},
            "config": read_keys(self.dumped, stage.reads), "status": "running", "started": _now(),
        }  # fmt: skip
        _write_record(self.out, stage.name, record)
        log = StageLog(folder / LOG_FILE)

        def say(text: str) -> None:
            log.say(text)
            display.say(f"{stage.name}: {text}")

        def progress(done: int, total: int | None, unit: str = "step") -> None:
            display.update(stage.name, done, total, unit)

        context = StageContext(self.config, self.out, folder, done_inputs, state.state == "resume", say, progress,
                               self.config_ref)  # fmt: skip
        started = time.monotonic()
        display.start(stage.name)
        try:
            with captured(log), MetricsWatcher(display, stage.name, folder):
                outputs = dict(stage.run(context))
        except BaseException as err:
            interrupted = isinstance(err, KeyboardInterrupt | SystemExit)
            log.exception(err)
            log.close()
            status = "interrupted" if interrupted else "failed"
            seconds = round(time.monotonic() - started, 3)
            record.update(status=status, finished=_now(), seconds=seconds, error=f"{type(err).__name__}: {err}")
            _write_record(self.out, stage.name, record)
            display.finish(stage.name, record["status"])
            if interrupted:
                raise
            raise StageFailed(self._failure(stage.name, err)) from err
        log.close()
        record.update(status="done", finished=_now(), seconds=round(time.monotonic() - started, 3), outputs=outputs)
        _write_record(self.out, stage.name, record)
        display.finish(stage.name, "done")

    def _failure(self, name: str, err: BaseException) -> str:
        log = self.out / name / LOG_FILE
        lines = tail(log, 20)
        return (
            f"stage {name} failed: {type(err).__name__}: {err}\n"
            f"last lines of {log}:\n{lines}\n"
            f"rerun it (done stages are skipped): {self.rerun} --from {name}"
        )
