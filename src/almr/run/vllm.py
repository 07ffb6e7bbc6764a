"""Chat models behind `vllm serve` for the pipeline's pairwise stage (`pipeline.engine: vllm`): each
model directory gets its own server on 127.0.0.1 at a free port, started with the command `almr
serve --print-vllm-command` prints (the model's own chat template, its generation config ignored),
its output appended to the stage's log; the stage talks to it as to any OpenAI-compatible endpoint
and stops it when done. A server that exits or does not answer `/health` in time stops the stage
with the tail of its output."""

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx

from almr.errors import AlmrError
from almr.run.logs import tail
from almr.serve.upstream import vllm_command
from almr.sweep.launch import free_port


@contextmanager
def vllm_served(model_dir: Path, name: str, log: Path, *, dtype: str, gpu_memory_utilization: float,
                start_timeout_s: float) -> Iterator[str]:  # fmt: skip
    """`vllm serve` of `model_dir` as model `name`; yields its OpenAI base URL (…/v1)."""
    port = free_port()
    command = shlex.split(vllm_command(model_dir, name, host="127.0.0.1", port=port, dtype=dtype))
    command += ["--gpu-memory-utilization", f"{gpu_memory_utilization:.3f}"]
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        try:
            # its own process group: vLLM's engine runs in child processes that hold the GPU's memory
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError:
            raise AlmrError("pipeline.engine=vllm, but there is no `vllm` command here; install vLLM "
                            "(pip install vllm) or set pipeline.engine: transformers") from None  # fmt: skip
    try:
        _await_health(process, f"http://127.0.0.1:{port}/health", log, name, start_timeout_s)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM to the server's process group, SIGKILL to whatever of it is left after `grace_s` or
    after the server itself has exited: the next server must find the GPU's memory free."""
    _signal_group(process, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # every process of the group has exited
        os.killpg(process.pid, sig)


def _await_health(process: subprocess.Popen[bytes], url: str, log: Path, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise AlmrError(f"vllm serve of {name} exited with code {process.returncode}; its last lines "
                            f"({log}):\n{tail(log, 15)}")  # fmt: skip
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AlmrError(f"vllm serve of {name} did not answer {url} within {timeout_s:.0f} s "
                            f"(pipeline.vllm_start_timeout_s); its last lines ({log}):\n{tail(log, 15)}")  # fmt: skip
        time.sleep(0.5)


@contextmanager
def vllm_models(models: Mapping[str, str], log: Path, *, dtype: str, start_timeout_s: float
                ) -> Iterator[dict[str, str]]:  # fmt: skip
    """Every model of `models` ({label: directory}) behind its own `vllm serve`, sharing the GPU's
    memory evenly; yields {label: base URL}."""
    share = 0.9 / max(len(models), 1)
    with ExitStack() as stack:
        yield {label: stack.enter_context(vllm_served(Path(path), label, log, dtype=dtype,
                                                      gpu_memory_utilization=share,
                                                      start_timeout_s=start_timeout_s))
               for label, path in models.items()}  # fmt: skip
