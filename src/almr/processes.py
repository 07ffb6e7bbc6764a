"""Which process of a multi-process launch this is, from the environment torchrun and accelerate
launch set (before any process group exists): one process writes shared files and speaks."""

import os
import time
from pathlib import Path


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch; True in a single process."""
    return int(os.environ.get("RANK", "0")) == 0


def await_main_process(path: Path, poll_s: float = 0.5) -> None:
    """Block until the first process has written `path` (atomically). No deadline: when the first
    process fails, the launcher stops the others (torchrun and accelerate launch on one node; across
    nodes the stage jobs' `srun --kill-on-bad-exit=1`)."""
    while not path.is_file():
        time.sleep(poll_s)
