"""`almr eval` and `almr eval judge` as a user runs them (`python -m almr.cli`), against real servers on
127.0.0.1: the model names sent (`--endpoint-model`, `--judge-model`, else GET /v1/models), a server
that is down, answers 404 or fails with 500 — one line naming the URL, exit code 2, no traceback —
an incomplete judge run exits non-zero, result files named by host and model, and the placement flags
(`--device`, `--dtype`, `--batch-size`) of an in-process evaluation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_server import ScriptedServer, chat_reply, closed_port_url, models, openai_error

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
FAST = ["--set", "eval.retry_backoff_s=0", "--set", "eval.max_retries=1", "--set", "eval.judge.retries=1"]


def almr(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "almr.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line a refused command prints (and nothing like a traceback)."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


# --------------------------------------------------------------------------- almr eval judge


def test_judge_sends_the_model_names_asked_for_and_names_the_file_by_host_and_model(tmp_path: Path) -> None:
    model_routes = {("GET", "/v1/models"): [models("tiny-chat", "other")],
                    ("POST", "/v1/chat/completions"): [chat_reply("我的回答")]}  # fmt: skip
    judge_routes = {("GET", "/v1/models"): [models("judge-a", "judge-b")],
                    ("POST", "/v1/chat/completions"): [chat_reply("不错。\n得分：0.5")]}  # fmt: skip
    with ScriptedServer(model_routes) as model, ScriptedServer(judge_routes) as judge:
        done = almr("eval", "judge", "--model", model.url, "--endpoint-model", "other", "--judge", judge.url,
                    "--judge-model", "judge-b", "--data-dir", str(FIXTURES), *FAST, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert [body["model"] for body in model.posts("/v1/chat/completions")] == ["other", "other"]
        assert [body["model"] for body in judge.posts("/v1/chat/completions")] == ["judge-b", "judge-b"]
        port = model.url.split(":")[2].split("/")[0]
        path = tmp_path / "eval" / f"127.0.0.1_{port}-other-judge.json"
        result = json.loads(path.read_text())
        assert (result["endpoint_model"], result["judge_model"]) == ("other", "judge-b")
        assert result["tasks"]["belle_eval"]["metrics"]["score"]["value"] == 50.0

        # without names: the first model each server lists
        done = almr("eval", "judge", "--model", model.url, "--judge", judge.url, "--data-dir", str(FIXTURES),
                    "--limit", "1", *FAST, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert model.posts("/v1/chat/completions")[-1]["model"] == "tiny-chat"
        assert judge.posts("/v1/chat/completions")[-1]["model"] == "judge-a"
        assert (tmp_path / "eval" / f"127.0.0.1_{port}-tiny-chat-judge.json").is_file()


def test_judge_with_nothing_judged_writes_the_failures_and_exits_2(tmp_path: Path) -> None:
    judge_routes = {("GET", "/v1/models"): [models("j")], ("POST", "/v1/chat/completions"): [chat_reply("还可以吧")]}
    model_routes = {("GET", "/v1/models"): [models("m")], ("POST", "/v1/chat/completions"): [chat_reply("答")]}
    out = tmp_path / "j.json"
    with ScriptedServer(model_routes) as model, ScriptedServer(judge_routes) as judge:
        done = almr("eval", "judge", "--model", model.url, "--judge", judge.url, "--data-dir", str(FIXTURES),
                    "-o", str(out), *FAST, cwd=tmp_path)  # fmt: skip
    assert error_line(done) == (
        "error: incomplete evaluation: belle_eval judged 0 of 2 items; the items not judged and why are listed above "
        f"and under each task's failures in {out}"
    )
    result = json.loads(out.read_text())
    assert [f["error"] for f in result["tasks"]["belle_eval"]["failures"]] == ["unparseable verdict: '还可以吧'"] * 2
    assert "belle_eval item 0: not judged: unparseable verdict: '还可以吧'" in done.stderr


def test_judge_that_is_down_or_answers_404_stops_before_any_item(tmp_path: Path) -> None:
    down = closed_port_url()
    model_routes = {("GET", "/v1/models"): [models("m")], ("POST", "/v1/chat/completions"): [chat_reply("答")]}
    with ScriptedServer(model_routes) as model:
        done = almr("eval", "judge", "--model", model.url, "--judge", down, "--data-dir", str(FIXTURES), *FAST,
                    cwd=tmp_path)  # fmt: skip
        assert error_line(done) == (
            f"error: GET {down}/models: cannot connect (Connection refused) after 2 attempts; is the server running "
            "and reachable at this address?"
        )
        # vLLM's answer to a model it does not serve, here from the model under test: fatal, not per item
        not_found = openai_error(404, "NotFoundError", "The model `j` does not exist.")
        wrong = {("GET", "/v1/models"): [models("j")], ("POST", "/v1/chat/completions"): [not_found]}
        with ScriptedServer(wrong) as judge:
            done = almr("eval", "judge", "--model", judge.url, "--judge", judge.url, "--data-dir", str(FIXTURES),
                        *FAST, cwd=tmp_path)  # fmt: skip
            assert error_line(done) == (
                f"error: POST {judge.url}/chat/completions: HTTP 404 (NotFoundError: The model `j` does not exist.); "
                "check that the URL is the API base (…/v1) and that the server has /chat/completions and serves the "
                "model asked for (--endpoint-model; GET …/v1/models lists them)"
            )
            assert len(judge.posts("/v1/chat/completions")) == 1
        assert model.posts("/v1/chat/completions") == []
        done = almr("eval", "judge", "--model", model.url, "--judge", model.url, "--judge-model", "gpt-4",
                    "--data-dir", str(FIXTURES), *FAST, cwd=tmp_path)  # fmt: skip
        assert error_line(done) == (
            f"error: {model.url} does not serve model 'gpt-4' (--judge-model (eval.judge.model)); it serves: m"
        )


# --------------------------------------------------------------------------- almr eval --model URL


def test_eval_against_an_endpoint_that_is_down_404s_or_fails(tmp_path: Path) -> None:
    down = closed_port_url()
    args = ["--tasks", "cmrc2018", "--data-dir", str(FIXTURES), *FAST]
    done = almr("eval", "--model", down, *args, cwd=tmp_path)
    assert error_line(done) == (
        f"error: GET {down}/models: cannot connect (Connection refused) after 2 attempts; is the server running and "
        "reachable at this address?"
    )
    failing = {("GET", "/v1/models"): [models("tiny")],
               ("POST", "/v1/completions"): [openai_error(500, "InternalServerError", "engine\ndied")]}  # fmt: skip
    with ScriptedServer(failing) as server:
        no_v1 = server.url.removesuffix("/v1")
        done = almr("eval", "--model", no_v1, *args, cwd=tmp_path)
        assert error_line(done) == (
            f"error: GET {no_v1}/models: HTTP 404 (Not Found); check that the URL is the API base (…/v1) and that "
            "the server has /models and serves the model asked for (--endpoint-model; GET …/v1/models lists them); "
            "or name the served model with --endpoint-model NAME"
        )
        done = almr("eval", "--model", server.url, "--endpoint-model", "llama", *args, cwd=tmp_path)
        assert (
            error_line(done) == f"error: {server.url} does not serve model 'llama' (--endpoint-model); it serves: tiny"
        )
        done = almr("eval", "--model", server.url, *args, cwd=tmp_path)
        assert error_line(done) == (
            f"error: POST {server.url}/completions: HTTP 500 (InternalServerError: engine died) after 2 attempts; "
            "the server failed; its log says why"
        )
        assert [body["model"] for body in server.posts("/v1/completions")] == ["tiny", "tiny"]
    assert not (tmp_path / "eval").exists()  # nothing half-written


# --------------------------------------------------------------------------- in process: --device, --dtype


def test_device_dtype_and_batch_size_flags_reach_the_model_and_the_result(tmp_path: Path, small_world: Path) -> None:
    from test_eval_tasks import tiny_model_dir

    model = tiny_model_dir(tmp_path / "run" / "checkpoints" / "step_00000040" / "hf", small_world / "tokenizer")
    args = ["eval", "--model", str(model), "--tasks", "world_mmlu", "--data-dir", str(small_world), "--limit", "2"]
    done = almr(*args, "--device", "cpu", "--dtype", "bfloat16", "--batch-size", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "eval" / "run-step_00000040-tasks.json").read_text())
    assert (result["device"], result["dtype"], result["batch_size"]) == ("cpu", "bfloat16", 3)
    assert result["tasks"]["world_mmlu"]["n_samples"] == 2
    assert error_line(almr(*args, "--dtype", "fp16", cwd=tmp_path)) == (
        "error: invalid config (defaults with --set eval.dtype=fp16):"
    )
    if not _cuda():
        assert error_line(almr(*args, "--device", "cuda:1", cwd=tmp_path)) == (
            "error: eval.device=cuda:1 (--device) but 0 CUDA device(s) are visible; use cpu, auto, or a visible cuda:N"
        )


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
