"""Each stage's `log.txt`: what third-party libraries print while the stage runs (transformers'
"Loading weights", lm-eval's warnings and tqdm bars, datasets, torch) lands there, not on the
user's terminal, which keeps almr's own progress.

The capture is at the file-descriptor level: fds 1 and 2 (stdout, stderr) are pointed at the log for
the stage's duration, so Python `logging` handlers bound to `sys.stderr`, `warnings`, tqdm, `print`,
C extensions and subprocesses the stage starts (the study's CPT runs) all write there alike,
whatever handler they installed. The runner's display writes to a duplicate of the terminal's
stdout made before (`terminal()`). tqdm is also switched off (`TQDM_DISABLE=1`), so the log holds
messages, not bar frames. almr's own messages reach both the terminal and the log (`StageLog.say`).
"""

import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

# Loggers that print their own output: quietened to warnings in the log (their infos are noise).
THIRD_PARTY = ("transformers", "lm_eval", "datasets", "accelerate", "trl", "torch", "httpx", "urllib3", "optuna",
               "uvicorn", "huggingface_hub", "filelock")  # fmt: skip


class StageLog:
    """The open log of one stage: `say` writes almr's own lines to it with a time stamp."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: TextIO = path.open("a", encoding="utf-8", buffering=1)

    def say(self, text: str) -> None:
        self.file.write(f"[{time.strftime('%H:%M:%S')}] almr: {text}\n")

    def exception(self, err: BaseException) -> None:
        self.file.write("".join(traceback.format_exception(err)))

    def close(self) -> None:
        self.file.close()


@contextmanager
def captured(log: StageLog) -> Iterator[None]:
    """Send fd 2, Python warnings and the third-party loggers to `log` until the block ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_fd = os.dup(1), os.dup(2)
    saved_env = os.environ.get("TQDM_DISABLE")
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY}
    os.environ["TQDM_DISABLE"] = "1"
    os.dup2(log.file.fileno(), 1)
    os.dup2(log.file.fileno(), 2)
    # handlers bound to a Python-level stream that is not fd 2 (a replaced sys.stderr: pytest, IDEs)
    handlers = _stream_handlers()
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = log.file  # not setStream: it flushes the old stream, which may be closed
    saved_stdout, saved_stderr = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log.file
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each distinct warning once, into the log
        for name in THIRD_PARTY:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved_stdout, saved_stderr
            for handler, stream in zip(handlers, streams, strict=True):
                handler.stream = stream
            for handler in _stream_handlers():  # made during the stage, bound to its log
                if handler.stream is log.file:
                    handler.stream = saved_stderr
            log.file.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_fd, 2)
            os.close(saved_out)
            os.close(saved_fd)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if saved_env is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = saved_env


def terminal() -> TextIO:
    """A stream on a duplicate of fd 1 as it is now: the user's terminal (or pipe) even while a
    stage's capture points fd 1 at its log."""
    sys.stdout.flush()
    return os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")


def _stream_handlers() -> list[logging.StreamHandler]:
    return [h for name in ("", *THIRD_PARTY) for h in logging.getLogger(name).handlers
            if type(h) is logging.StreamHandler]  # fmt: skip


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log (empty when there is none)."""
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
