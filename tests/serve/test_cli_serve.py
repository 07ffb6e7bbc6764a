"""`almr serve`: tokens, export and deletion through the command; the vLLM line; refusals."""

import json
from pathlib import Path

from typer.testing import CliRunner

from almr.cli import app
from almr.errors import ConfigError
from almr.serve.auth import hash_token
from almr.serve.store import Store
from conftest import MODEL, open_store


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_token_add_stores_only_the_hash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = invoke("serve", "token", "add", "carol", "--admin", "--set", f"serve.store={url}")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    store = Store(url)
    user = store.user_by_token(hash_token(token))
    assert user is not None and user.name == "carol" and user.is_admin and token not in user.token_hash
    store.close()


def test_export_and_delete_user(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    alice = store.user_by_name("alice")
    turn = store.begin_turn(alice.id, [{"role": "user", "content": "你好"}], None)
    store.add_reply(turn, "嗨", model=MODEL, params={}, finish_reason="stop", latency_ms=1.0, first_token_ms=0.5,
                    prompt_tokens=3, completion_tokens=2)  # fmt: skip
    store.close()
    url = f"serve.store=sqlite:///{tmp_path / 's.db'}"
    out = tmp_path / "c.jsonl"
    assert invoke("serve", "export", str(out), "--set", url).exit_code == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["user"] == "alice" and [m["content"] for m in record["messages"]] == ["你好", "嗨"]
    assert invoke("serve", "delete-user", "alice", "--set", url).exit_code == 0
    again = invoke("serve", "delete-user", "alice", "--set", url)
    assert isinstance(again.exception, ConfigError) and "no user alice" in str(again.exception)


def test_print_vllm_command_names_the_template_and_generation_config(chat_model: Path) -> None:
    result = invoke("serve", str(chat_model), "--print-vllm-command", "--set", "serve.model_name=c")
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith(f"vllm serve {chat_model} --served-model-name c")
    assert f"--chat-template {chat_model / 'chat_template.jinja'}" in line and "--generation-config vllm" in line


def test_a_server_without_tokens_stays_on_loopback(chat_model: Path) -> None:
    result = invoke("serve", str(chat_model), "--host", "0.0.0.0", "--set", "serve.auth.required=false")
    assert result.exit_code != 0 and "loopback" in str(result.exception) + result.output
