"""Which process of a multi-process launch this is, from the environment torchrun and accelerate
launch set (before any process group exists): one process writes shared files and speaks."""

import os


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch; True in a single process."""
    return int(os.environ.get("RANK", "0")) == 0
