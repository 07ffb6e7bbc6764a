"""A real uvicorn on 127.0.0.1 with the official openai client (sync and asyncio): streaming,
many concurrent streams batched, and a client that vanishes mid-stream."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from conftest import MODEL, TOKENS, LiveServer, open_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HELLO = [{"role": "user", "content": "我最近压力很大，睡不好。"}]


def test_openai_client_against_uvicorn(make_app: Callable[..., FastAPI], engine) -> None:
    from openai import AsyncOpenAI, OpenAI

    with LiveServer(make_app()) as live:
        api = OpenAI(base_url=live.url + "/v1", api_key=TOKENS["alice"], max_retries=0)
        whole = api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24)
        chunks = api.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert streamed == whole.choices[0].message.content

        async def many() -> list[str]:
            client = AsyncOpenAI(base_url=live.url + "/v1", api_key=TOKENS["bob"], max_retries=0)

            async def one(i: int) -> str:
                stream = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"第{i}天"}], max_tokens=16, stream=True
                )
                return "".join([c.choices[0].delta.content or "" async for c in stream])

            try:
                return await asyncio.gather(*(one(i) for i in range(12)))
            finally:
                await client.close()

        before = engine.batches
        assert len(asyncio.run(many())) == 12
        assert engine.batches - before < 12  # concurrent streams shared generate calls


def test_a_vanished_client_stops_its_generation(tmp_path: Path, engine) -> None:
    from almr.serve.app import create_app
    from conftest import serve_config

    store = open_store(tmp_path / "s.db")
    app = create_app(serve_config(persona={"max_tokens": 400}), engine, store)
    with LiveServer(app) as live:
        body = {"model": MODEL, "messages": HELLO, "max_tokens": 400, "stream": True}
        headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
        with httpx.Client(timeout=60) as http, http.stream("POST", live.url + "/v1/chat/completions", json=body,
                                                           headers=headers) as reply:  # fmt: skip
            for line in reply.iter_lines():
                if '"content"' in line:
                    break  # hang up after the first chunk
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            replies = [m for c in store.iter_export() for m in c["messages"] if m["role"] == "assistant"]
            if replies:
                break
            time.sleep(0.1)
    assert replies and replies[0]["finish_reason"] == "abort"
    assert replies[0]["completion_tokens"] < 400
