"""Shared pieces of the serving tests: the world's chat model, one loaded engine per session, apps
over a fresh SQLite store, the official openai client in process and against a real uvicorn."""

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from almr.serve.app import create_app
from almr.serve.auth import hash_token
from almr.serve.config import ServeConfig
from almr.serve.store import Store
from almr.serve.transformers_engine import TransformersEngine

MODEL = "companion"
TOKENS = {"alice": "almr-alice-token", "bob": "almr-bob-token", "admin": "almr-admin-token"}


@pytest.fixture(scope="session")
def chat_model(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worlds import save_world_model

    return save_world_model(small_world, tmp_path_factory.mktemp("serve") / MODEL)


@pytest.fixture(scope="session")
def engine(chat_model: Path) -> TransformersEngine:
    engine = TransformersEngine(chat_model, model_name=MODEL)
    engine.load()
    return engine


def serve_config(**overrides: Any) -> ServeConfig:
    """A config for tests: greedy persona without a system prompt unless overridden."""
    persona = {"system_prompt": "", "temperature": 0.0, "max_tokens": 32} | overrides.pop("persona", {})
    return ServeConfig.model_validate({"model_name": MODEL, "persona": persona} | overrides)


def open_store(path: Path) -> Store:
    store = Store(f"sqlite:///{path}")
    for name, token in TOKENS.items():
        store.add_user(name, hash_token(token), admin=name == "admin")
    return store


@pytest.fixture
def make_app(tmp_path: Path, engine: TransformersEngine) -> Callable[..., FastAPI]:
    def make(**overrides: Any) -> FastAPI:
        return create_app(serve_config(**overrides), overrides.pop("engine", engine), open_store(tmp_path / "s.db"))

    return make


@pytest.fixture
def client(make_app: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


def openai_client(test_client: Any, user: str = "alice") -> Any:
    from openai import OpenAI

    return OpenAI(base_url=str(test_client.base_url).rstrip("/") + "/v1", api_key=TOKENS[user],
                  http_client=test_client, max_retries=0)  # fmt: skip


class LiveServer:
    """uvicorn on 127.0.0.1 at a free port, in a thread of this process."""

    def __init__(self, app: FastAPI) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class FakeEngine:
    """An engine that streams a fixed reply in small pieces: for tests of the page and the store
    that must not depend on what a random tiny model says."""

    kind = "fake"

    def __init__(self, reply: str, model_name: str = MODEL, delay_s: float = 0.02) -> None:
        self.reply, self.model_name, self.delay_s = reply, model_name, delay_s

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def queued(self) -> int:
        return 0

    def stream_chat(self, messages: list[dict[str, str]], sampling: Any) -> Any:
        return self._stream()

    async def _stream(self) -> Any:
        from almr.serve.engine import Delta

        pieces = [self.reply[i : i + 3] for i in range(0, len(self.reply), 3)]
        for piece in pieces:
            await asyncio.sleep(self.delay_s)
            yield Delta(piece)
        yield Delta("", "stop", 5, len(pieces))
