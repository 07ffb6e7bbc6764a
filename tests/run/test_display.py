"""The pipeline's output without a terminal: plain time-stamped lines, progress read from a
trainer's metrics.jsonl, lines never cut at the console's width."""

import io
import json
import re
from pathlib import Path

from rich.console import Console

from almr.run.display import Display, read_progress


def test_plain_lines_with_progress_rate_and_eta_are_never_cut(tmp_path: Path) -> None:
    text = io.StringIO()
    display = Display(Console(file=text, width=40, soft_wrap=True), total=2, every_s=0.0, live=False)
    display.start("cpt")
    display.update("cpt", 0, 64, "step", None)  # loading, the step-0 probe: no rate yet
    display.update("cpt", 1, 64, "step", 900.0)
    display.update("cpt", 40, 64, "step", 1234.0)
    display.say("a message longer than the forty columns of this console, kept on one line")
    display.finish("cpt", "done")
    lines = text.getvalue().splitlines()
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] cpt: started", lines[0])
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] cpt       step 0/64", lines[1])
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] cpt       step 1/64  900 tok/s", lines[2])
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] cpt       step 40/64  1\.2k tok/s  eta 0:\d\d", lines[3])
    assert lines[4].endswith("kept on one line")
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] cpt: done in 0:\d\d", lines[5])
    assert len(lines) == 6


def test_progress_lines_wait_for_their_period(tmp_path: Path) -> None:
    text = io.StringIO()
    display = Display(Console(file=text), total=1, every_s=3600.0, live=False)
    display.start("sft")
    for step in range(10):
        display.update("sft", step, 10)
    assert text.getvalue().count("\n") == 1  # only "started": the next line is due in an hour


def test_progress_of_the_newest_metrics_log(tmp_path: Path) -> None:
    assert read_progress(tmp_path) is None
    older, newer = tmp_path / "runs" / "r0", tmp_path / "runs" / "r1"
    for folder, steps, done in ((older, 64, 64), (newer, 32, 5)):
        folder.mkdir(parents=True)
        events = [{"event": "start", "step": 0, "steps": steps}, {"event": "val", "step": 0}]
        events += [{"event": "train", "step": s, "tokens_per_s": 100.0 * s} for s in range(1, done + 1)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    import os

    os.utime(older / "metrics.jsonl", (1, 1))  # the other run ended long ago
    assert read_progress(tmp_path) == (5, 32, "step", 500.0)
    (newer / "metrics.jsonl").write_text(json.dumps({"event": "start", "step": 0, "steps": 32}) + "\n")
    assert read_progress(tmp_path) == (0, 32, "step", None)  # started, no step yet
