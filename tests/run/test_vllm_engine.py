"""`pipeline.engine: vllm`: the pairwise stage starts one `vllm serve` per chat model on 127.0.0.1,
waits for /health, talks to it as to any OpenAI endpoint and stops it. vLLM needs a GPU, so a
stand-in `vllm` command on PATH — which takes vLLM's arguments and starts `almr serve` (an
OpenAI-compatible server, taking the client's sampling settings as vLLM does) on the same port —
plays it here; the command line, the health wait,
the shutdown and the errors are the real ones."""

import os
import stat
import sys
import time
from pathlib import Path

import httpx
import pytest

from almr.errors import AlmrError
from almr.run.vllm import vllm_models, vllm_served
from worlds import save_world_model

FAKE_VLLM = """#!{python}
import os, sys
args = sys.argv[1:]
assert args[0] == "serve", args
with open({calls!r}, "a") as out:
    out.write(" ".join(args) + "\\n")
options = dict(zip(args[2::2], args[3::2]))
if {fail!r}:
    print("CUDA error: no kernel image is available", flush=True)
    sys.exit(3)
# as vLLM's engine core: a child process in the server's process group, outliving a plain terminate
import subprocess
engine = subprocess.Popen(["sleep", "600"])
with open({calls!r} + ".engines", "a") as out:
    out.write(f"{{engine.pid}}\\n")
os.execv(sys.executable, [sys.executable, "-m", "almr.cli", "serve", args[1], "--host", options["--host"],
                          "--port", options["--port"], "--set", "serve.model_name=" + options["--served-model-name"],
                          "--set", "serve.store=sqlite:///" + os.path.join(os.path.dirname({calls!r}),
                                                                           "serve-" + options["--port"] + ".db"),
                          "--set", "serve.auth.required=false", "--set", "serve.persona.allow_client_overrides=true"])
"""


def _running(pid: int, wait_s: float = 5.0) -> bool:
    """Whether process `pid` still runs after waiting up to `wait_s` for it to stop (a zombie has stopped)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


def fake_vllm(bin_dir: Path, calls: Path, fail: bool = False) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "vllm"
    script.write_text(FAKE_VLLM.format(python=sys.executable, calls=str(calls), fail=fail))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "bin"


def test_each_model_gets_its_own_server_and_every_server_stops(small_world: Path, tmp_path: Path, on_path: Path
                                                               ) -> None:  # fmt: skip
    calls = tmp_path / "calls.txt"
    fake_vllm(on_path, calls)
    models = {"a": str(save_world_model(small_world, tmp_path / "a")),
              "b": str(save_world_model(small_world, tmp_path / "b", seed=1))}  # fmt: skip
    log = tmp_path / "vllm.log"
    with vllm_models(models, log, dtype="float32", start_timeout_s=120) as urls:
        assert set(urls) == {"a", "b"} and urls["a"] != urls["b"]
        for label, url in urls.items():
            served = httpx.get(f"{url}/models", timeout=10).json()
            assert [m["id"] for m in served["data"]] == [label]
    for url in urls.values():  # stopped on leaving
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/models", timeout=2)
    engines = [int(pid) for pid in Path(f"{calls}.engines").read_text().split()]
    assert len(engines) == 2 and not any(_running(pid) for pid in engines)  # each server's whole group
    lines = calls.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:  # `almr serve --print-vllm-command`'s line, and an even share of the GPU each
        assert "--served-model-name" in line and "--generation-config vllm" in line and "--host 127.0.0.1" in line
        assert "--gpu-memory-utilization 0.450" in line and "--chat-template" in line
    assert log.read_text().count("$ vllm serve") == 2


def test_a_server_that_dies_or_is_missing_stops_the_stage_with_its_output(
    tmp_path: Path, on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_vllm(on_path, tmp_path / "calls.txt", fail=True)
    log = tmp_path / "vllm.log"
    serve = vllm_served(tmp_path, "m", log, dtype="bfloat16", gpu_memory_utilization=0.9, start_timeout_s=60)
    with pytest.raises(AlmrError, match=r"(?s)vllm serve of m exited with code 3.*no kernel image"), serve:
        pass
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    serve = vllm_served(tmp_path, "m", log, dtype="bfloat16", gpu_memory_utilization=0.9, start_timeout_s=60)
    with pytest.raises(AlmrError, match=r"no `vllm` command here; install vLLM .* or set pipeline.engine"), serve:
        pass
