"""The FastAPI app: `create_app(config, engine, store)` mounts the routes, the error envelope and
the limits; the engine and store arrive from outside, so tests hand in fakes or in-memory ones."""

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from almr.serve.auth import RateLimiter
from almr.serve.config import ServeConfig
from almr.serve.deps import ServerState
from almr.serve.engine import Engine
from almr.serve.metrics import Metrics
from almr.serve.routes import chat, completions, conversations, models, page
from almr.serve.schemas import ApiError, error_body
from almr.serve.store import Store


def create_app(config: ServeConfig, engine: Engine, store: Store) -> FastAPI:
    metrics = Metrics()
    metrics.watch_engine(
        engine.queued, lambda: getattr(engine, "batches", 0), lambda: getattr(engine, "batched_sequences", 0)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.close()

    app = FastAPI(title="almr serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.almr = ServerState(config, engine, store, RateLimiter(config.auth.requests_per_minute), metrics)
    for module in (chat, completions, models, conversations, page):
        app.include_router(module.router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodyLimit, max_bytes=config.auth.max_body_bytes, metrics=metrics)
    return app


async def _api_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ApiError)
    return JSONResponse(error_body(err.status, err.message, err.param, err.code), status_code=err.status)


async def _invalid(request: Request, err: Exception) -> JSONResponse:
    """FastAPI's 422 as OpenAI's 400, naming the first wrong field."""
    assert isinstance(err, RequestValidationError)
    first = err.errors()[0] if err.errors() else {}
    location = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(location) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        message = f"the body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    elif not location:
        message = f"the body must be a JSON object with the request's parameters ({first.get('msg', 'invalid')})"
    elif kind == "extra_forbidden":
        message = f"unknown parameter: {param}"
    else:
        message = f"{param or 'body'}: {first.get('msg', 'invalid')}"
    return JSONResponse(error_body(400, message, param, kind or None), status_code=400)


async def _http_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StarletteHTTPException)
    return JSONResponse(error_body(err.status_code, str(err.detail)), status_code=err.status_code)


class BodyLimit:
    """Refuses bodies over `max_bytes` (413) whether or not they say their length, and counts every
    response by route and status for /metrics."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope.get("path", "")
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send, route)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.requests.labels(_route(route), str(message["status"])).inc()
            await send(message)

        try:
            await self.app(scope, limited_receive, counting_send)
        except _TooLarge:
            if not started:
                await self._too_large(send, route)

    async def _too_large(self, send: Send, route: str) -> None:
        body = json.dumps(
            error_body(413, f"the request body exceeds {self.max_bytes} bytes (serve.auth.max_body_bytes)")
        ).encode()
        self.metrics.requests.labels(_route(route), "413").inc()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(StarletteHTTPException):
    # an HTTPException, so that FastAPI's body reading passes it on instead of turning it into a 400
    def __init__(self) -> None:
        super().__init__(413, "the request body is too large")


def _route(path: str) -> str:
    # a bounded label set: conversation and message ids are folded away
    parts = path.split("/")
    return "/".join(p if len(p) < 24 else ":id" for p in parts) if path.startswith("/api") else path[:40]


def serving_app(config: ServeConfig, engine: Engine, store_url: str | None = None) -> Any:
    """The app with the store at `config.store` (or `store_url`)."""
    return create_app(config, engine, Store(store_url or config.store))
