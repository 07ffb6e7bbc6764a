"""SIGUSR2 (a scheduler's warning before the time limit) stops a run after the step it is in, with a
checkpoint of that step; --resume continues it to the same losses as a run never stopped; and the
Slurm job's wrapper passes the signal on to the training processes and waits for them."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from almr.sweep.launch import RunCommand
from train_toys import ToyLoader, make_model_dir, toy_config, train_toy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SignalledLoader(ToyLoader):
    """A toy loader that sends this process SIGUSR2 while the batches of step `at` are fetched."""

    def __init__(self, at: int, **kwargs: Any) -> None:
        super().__init__(4, 32, 256, **kwargs)
        self.at = at

    def __iter__(self) -> Any:
        for i, batch in enumerate(super().__iter__()):
            if i == 2 * (self.at - 1):  # 2 micro-batches a step
                os.kill(os.getpid(), signal.SIGUSR2)
            yield batch


def test_a_signal_stops_after_the_step_with_its_checkpoint_and_resume_matches(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path / "model")
    whole = train_toy(toy_config(tmp_path / "whole", model_dir), loader=ToyLoader(4, 32, 256))
    config = toy_config(tmp_path / "cut", model_dir)
    cut = train_toy(config, loader=SignalledLoader(at=3))
    assert cut.stopped and cut.steps == 3 and cut.checkpoint is not None and cut.checkpoint.name.endswith("3")
    assert cut.losses == whole.losses[:3]
    events = [json.loads(line) for line in (tmp_path / "cut/run/metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-2:] == ["checkpoint", "stopped"]
    assert not any(e["event"] == "end" for e in events)
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL  # the handler is the run's only
    rest = train_toy(config, loader=ToyLoader(4, 32, 256), resume=True)
    assert not rest.stopped and rest.steps == 6
    assert rest.losses == whole.losses[3:]  # bit-exact continuation


def test_the_slurm_wrapper_passes_the_signal_on_and_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "saved"
    trainer = tmp_path / "trainer.py"
    trainer.write_text(
        "import signal, sys, time, pathlib\n"
        "def stop(*_):\n"
        f"    time.sleep(0.5); pathlib.Path({str(marker)!r}).write_text('saved'); sys.exit(75)\n"
        "signal.signal(signal.SIGUSR2, stop)\n"
        "time.sleep(60)\n"
    )
    monkeypatch.setenv("ALMR_RUN_COMMAND", f"{sys.executable} {trainer}")
    command = RunCommand(save_wait_s=20.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            command()
        except subprocess.CalledProcessError as err:  # the trainer stopped early on purpose (exit 75)
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    while command._child is None:
        time.sleep(0.05)
    time.sleep(1.0)  # the trainer has installed its handler
    requeue = command.checkpoint()
    assert marker.read_text() == "saved"  # it saved before the job was requeued
    assert type(requeue).__name__ == "DelayedSubmission" and requeue.function is command
    thread.join(timeout=10)
    assert [e.returncode for e in errors] == [75]
