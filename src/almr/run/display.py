"""What the user sees while the pipeline runs: on a terminal, a live rich display (one bar per
running stage and one for the whole pipeline); elsewhere (CI, Slurm logs, `| tee`), plain time
stamped lines, one when a stage starts or ends and one every `every_s` seconds while it runs:

    [12:03:04] cpt       step 40/64  1.2k tok/s  eta 0:35

A stage's progress comes from `update` (the stage says it) or from the newest `metrics.jsonl`
under its folder, which every almr trainer writes (`MetricsWatcher`): steps of its `start` event,
step and tokens/s of its last `train` event.
"""

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else (
        f"{seconds // 60}:{seconds % 60:02d}")  # fmt: skip


def _rate(tps: float | None) -> str:
    if not tps:
        return ""
    return f"{tps / 1000:.1f}k tok/s" if tps >= 1000 else f"{tps:.0f} tok/s"


class Display:
    """Progress of the pipeline's stages, live on a terminal or as plain lines elsewhere."""

    def __init__(self, console: Console, total: int, every_s: float = 30.0, live: bool | None = None) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.every_s = every_s
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._last_line: dict[str, float] = {}
        self._first: dict[str, tuple[float, int]] = {}  # the first count seen of the run in flight
        self._tasks: dict[str, TaskID] = {}
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[note]}", markup=False), TimeElapsedColumn(), console=console,
                transient=False,
            )  # fmt: skip
            self._overall = self._progress.add_task("pipeline", total=total, note="")
            self._progress.start()

    def say(self, text: str) -> None:
        """One of almr's own lines, above the live bars (or as a plain line)."""
        with self._lock:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {text}", markup=False, highlight=False, soft_wrap=True)

    def start(self, stage: str) -> None:
        with self._lock:
            self._started[stage] = time.monotonic()
            self._last_line[stage] = time.monotonic()
            if self._progress is not None:
                self._tasks[stage] = self._progress.add_task(f"  {stage}", total=None, note="")
        self.say(f"{stage}: started")

    def update(self, stage: str, done: int, total: int | None, unit: str = "step", tps: float | None = None) -> None:
        """The stage has done `done` of `total` `unit`s (at `tps` tokens/s)."""
        started = self._started.get(stage)
        if started is None:
            return
        now = time.monotonic()
        first = self._first.get(stage)
        if done and (first is None or done < first[1]):  # a new run (the study's next one): measure from here
            first = self._first[stage] = (now, done)
        eta = ""
        if total and first is not None and done > first[1]:
            # from the rate since the first step seen: model loading and the step-0 probe are not steps
            eta = f"eta {_clock((now - first[0]) / (done - first[1]) * (total - done))}"
        note = "  ".join(x for x in (_rate(tps), eta) if x)
        with self._lock:
            if self._progress is not None and stage in self._tasks:
                self._progress.update(self._tasks[stage], completed=done, total=total, note=f"{unit} {note}")
                return
            if now - self._last_line[stage] < self.every_s:
                return
            self._last_line[stage] = now
        count = f"{unit} {done}/{total}" if total else f"{unit} {done}"
        self.say(f"{stage:<10}{count}  {note}".rstrip())

    def finish(self, stage: str, status: str) -> None:
        self._first.pop(stage, None)
        started = self._started.pop(stage, None)
        seconds = time.monotonic() - started if started is not None else 0.0
        with self._lock:
            if self._progress is not None and stage in self._tasks:
                self._progress.remove_task(self._tasks.pop(stage))
            if status in ("done", "skipped"):
                self.done += 1
                if self._progress is not None:
                    self._progress.update(self._overall, completed=self.done)
        if status != "skipped":
            self.say(f"{stage}: {status} in {_clock(seconds)}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class MetricsWatcher:
    """A thread that reads the newest `metrics.jsonl` under a stage's folder once a second and
    passes its progress to `display.update`."""

    def __init__(self, display: Display, stage: str, folder: Path, period_s: float = 1.0) -> None:
        self.display, self.stage, self.folder, self.period_s = display, stage, folder, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"almr-watch-{stage}", daemon=True)

    def __enter__(self) -> "MetricsWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                state = read_progress(self.folder)
            except OSError:
                continue
            if state is not None:
                self.display.update(self.stage, *state)


def read_progress(folder: Path) -> tuple[int, int | None, str, float | None] | None:
    """(step, steps, "step", tokens/s) of the newest metrics.jsonl under `folder`, or None. A stage's
    folder may hold many runs (the study's): the newest log is the run in flight."""
    logs = [p for p in folder.rglob("metrics.jsonl")] if folder.is_dir() else []
    if not logs:
        return None
    newest = max(logs, key=os.path.getmtime)
    steps: int | None = None
    with newest.open("rb") as f:
        head = f.readline()
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4096))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
    start = _event(head.decode("utf-8", errors="replace"))
    if start and start.get("event") == "start":
        steps = start.get("steps")
    for line in reversed(lines):
        event = _event(line)
        if event and event.get("event") == "train":
            return int(event["step"]), steps, "step", event.get("tokens_per_s")
    return (0, steps, "step", None) if steps else None


def _event(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
