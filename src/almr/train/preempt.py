"""Stopping a run cleanly before a scheduler kills it: on SIGUSR2 (Slurm's `--signal=USR2@N`, which
the sweep's Slurm launcher forwards to the training processes before it requeues the job) the
trainer finishes the step it is in, writes a checkpoint, records a `stopped` event and returns,
so the requeued job resumes from that step instead of the last periodic checkpoint.

All processes stop at the same step: each step ends with one all-reduce of "was I asked to stop",
so a signal that reaches the processes a step apart still stops them together."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import torch

from almr.train.parallel import Distributed, all_reduce_sum

STOP_SIGNAL = signal.SIGUSR2


class StopRequest:
    def __init__(self) -> None:
        self.asked = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True

    def agreed(self, dist_env: Distributed) -> bool:
        """Whether any process was asked to stop (collective when there are several)."""
        if dist_env.world_size == 1:
            return self.asked
        flag = torch.tensor(1.0 if self.asked else 0.0, device=dist_env.device)
        return bool(all_reduce_sum(flag).item() > 0)


@contextmanager
def stop_on_signal() -> Iterator[StopRequest]:
    """A StopRequest set by STOP_SIGNAL while the block runs (the previous handler restored after);
    off the main thread, where handlers cannot be installed, it is never set."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = signal.signal(STOP_SIGNAL, request._handle)
    try:
        yield request
    finally:
        signal.signal(STOP_SIGNAL, previous)
