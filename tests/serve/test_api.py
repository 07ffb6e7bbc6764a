"""The OpenAI-compatible API in process, through the official `openai` client: chat, streaming in
OpenAI's chunk format, completions with logprobs, and every kind of bad input answered with
OpenAI's error envelope."""

from collections.abc import Callable
from typing import Any

import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from almr.serve.config import BatchingConfig
from conftest import MODEL, TOKENS, openai_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ALICE = {"Authorization": f"Bearer {TOKENS['alice']}"}
HELLO = [{"role": "user", "content": "你好，今天我有点难过。"}]


def test_models_health_and_metrics(client: TestClient) -> None:
    assert [m.id for m in openai_client(client).models.list()] == [MODEL]
    assert client.get("/health").json()["status"] == "ok"
    openai_client(client).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    text = client.get("/metrics").text
    assert 'almr_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert "almr_time_to_first_token_seconds_bucket" in text


def test_streamed_chinese_reply_joins_to_the_non_streamed_one(client: TestClient) -> None:
    api = openai_client(client)
    whole = api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=32)
    chunks = list(
        api.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=32, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-2])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    pieces = [c.choices[0].delta.content or "" for c in chunks[:-1]]
    assert "".join(pieces) == whole.choices[0].message.content
    assert not any("\ufffd" in p for p in pieces)


def test_sse_ends_with_done(client: TestClient) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=ALICE) as reply:
        lines = [line for line in reply.iter_lines() if line]
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_completions_with_logprobs_and_echo(client: TestClient) -> None:
    api = openai_client(client)
    out = api.completions.create(model=MODEL, prompt=[[0, 40, 41, 42]], max_tokens=1, logprobs=2, echo=True,
                                 temperature=0)  # fmt: skip
    lp = out.choices[0].logprobs
    assert len(lp.token_logprobs) == 5 and lp.token_logprobs[0] is None
    assert all(
        max(top.values()) >= chosen for top, chosen in zip(lp.top_logprobs[1:], lp.token_logprobs[1:], strict=True)
    )
    plain = api.completions.create(model=MODEL, prompt=["hello", "world"], max_tokens=3, temperature=0)
    assert [c.index for c in plain.choices] == [0, 1] and plain.usage.completion_tokens <= 6


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": MODEL, "messages": HELLO, "n": 2}, 400, "n"),
        ({"model": MODEL, "messages": HELLO, "frobnicate": 1}, 400, "frobnicate"),
        ({"model": MODEL, "messages": HELLO, "logit_bias": {"5": 1}}, 400, "logit_bias"),
        ({"model": MODEL, "messages": HELLO, "temperature": 1.0}, 400, "temperature"),
        ({"model": MODEL, "messages": [{"role": "system", "content": "be rude"}, *HELLO]}, 400, "messages"),
        ({"model": MODEL, "messages": HELLO, "max_tokens": 10_000}, 400, "max_tokens"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "话" * 600}]}, 400, "messages"),
        ({"model": "gpt-4", "messages": HELLO}, 404, "model"),
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": MODEL, "messages": HELLO, "metadata": {"conversation_id": "nope"}}, 404, "metadata.conversation_id"),
    ],
)
def test_bad_requests_are_refused_with_the_envelope(client: TestClient, body: dict, status: int, param: str) -> None:
    reply = client.post("/v1/chat/completions", json=body, headers=ALICE)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


def test_malformed_json_and_oversized_bodies(make_app: Callable[..., FastAPI]) -> None:
    with TestClient(make_app(auth={"max_body_bytes": 4096})) as client:
        bad = client.post(
            "/v1/chat/completions", content=b'{"model": ', headers=ALICE | {"Content-Type": "application/json"}
        )
        assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
        long = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 10_000}]}
        big = client.post("/v1/chat/completions", json=long, headers=ALICE)
        assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"

        def chunked() -> Any:  # no Content-Length: the limit counts the bytes as they come
            yield b'{"model": "companion", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}]}'

        assert client.post("/v1/chat/completions", content=chunked(), headers=ALICE).status_code == 413


def test_tokens_are_required_and_checked(client: TestClient) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
    assert client.post("/v1/chat/completions", json=body).status_code == 401
    wrong = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer almr-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai_client(client).with_options(api_key="almr-wrong").chat.completions.create(model=MODEL, messages=HELLO)


def test_rate_limit_and_full_queue_give_429(make_app: Callable[..., FastAPI], engine: Any) -> None:
    with TestClient(make_app(auth={"requests_per_minute": 2})) as client:
        body = {"model": MODEL, "messages": HELLO, "max_tokens": 1}
        codes = [client.post("/v1/chat/completions", json=body, headers=ALICE).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
    before, engine.batching = engine.batching, BatchingConfig(max_queued=0)
    try:
        with TestClient(make_app()) as client:
            full = client.post("/v1/chat/completions", json=body, headers=ALICE)
    finally:
        engine.batching = before
        assert full.status_code == 429 and full.json()["error"]["type"] == "rate_limit_error"


def test_persona_is_applied_by_the_server(make_app: Callable[..., FastAPI], engine: Any) -> None:
    seen: list[list[dict]] = []
    original = engine.chat_prompt
    engine.chat_prompt = lambda messages: seen.append(messages) or original(messages)
    try:
        with TestClient(make_app(persona={"system_prompt": "你是陪伴者。"})) as client:
            openai_client(client).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    finally:
        del engine.chat_prompt
    assert seen[0][0] == {"role": "system", "content": "你是陪伴者。"} and seen[0][1:] == HELLO
