"""POST /v1/chat/completions: the companion's persona applied, every turn stored, replies
streamed in OpenAI's chunk format (role in the first delta, finish_reason in the last, usage
when `stream_options.include_usage`, then `data: [DONE]`)."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from almr.serve.config import PersonaConfig
from almr.serve.deps import CurrentUser, ServerState, State
from almr.serve.engine import Delta, Sampling
from almr.serve.routes.common import check_request, now, sse, usage
from almr.serve.schemas import ApiError, ChatRequest
from almr.serve.store import NotFound, Turn

router = APIRouter()
OVERRIDABLE = ("temperature", "top_p", "seed", "stop")


def persona_sampling(persona: PersonaConfig, body: ChatRequest) -> Sampling:
    """The persona's settings, with the request's where the config allows them (else 400)."""
    asked = [name for name in OVERRIDABLE if getattr(body, name) is not None]
    max_tokens = body.max_completion_tokens or body.max_tokens
    if not persona.allow_client_overrides:
        if asked:
            raise ApiError(
                400,
                f"{asked[0]} is set by this server's persona (serve.persona), not by the request; "
                "leave it out, or set serve.persona.allow_client_overrides=true",
                param=asked[0],
            )
        if any(m.role in ("system", "developer") for m in body.messages):
            raise ApiError(
                400,
                "the system prompt is set by this server's persona; send user and assistant "
                "messages only, or set serve.persona.allow_client_overrides=true",
                param="messages",
            )
        if max_tokens is not None and max_tokens > persona.max_tokens:
            raise ApiError(
                400, f"max_tokens={max_tokens} exceeds the persona's limit of {persona.max_tokens}", param="max_tokens"
            )
    return Sampling(
        temperature=persona.temperature if body.temperature is None else body.temperature,
        top_p=persona.top_p if body.top_p is None else body.top_p,
        max_tokens=max_tokens or persona.max_tokens,
        stop=body.stops(),
        seed=body.seed,
    )


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, user: CurrentUser, state: State) -> Any:
    started = time.perf_counter()
    check_request(body, state.engine)
    sampling = persona_sampling(state.config.persona, body)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    system = state.config.persona.system_prompt
    served = ([{"role": "system", "content": system}] if system and messages[0]["role"] != "system" else []) + messages
    stream = state.engine.stream_chat(served, sampling)  # refusals (context, full queue) raise here
    try:
        conversation = (body.metadata or {}).get("conversation_id")
        turn = await asyncio.to_thread(state.store.begin_turn, user.id, messages, conversation)
    except NotFound:
        await stream.aclose()
        raise ApiError(404, f"no conversation {conversation} for this user", param="metadata.conversation_id") from None
    except BaseException:
        await stream.aclose()
        raise
    record = _Recorder(state, turn, sampling, system, started)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _chunks(stream, record, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    parts: list[str] = []
    last = Delta()
    try:
        async for delta in stream:
            record.saw(delta)
            parts.append(delta.text)
            last = delta
    except BaseException:
        record.abandon("".join(parts))
        raise
    text = "".join(parts)
    await asyncio.to_thread(record.save, text, last)  # stored before the client is answered
    return JSONResponse(
        {
            "id": f"chatcmpl-{turn.reply_id}",
            "object": "chat.completion",
            "created": now(),
            "model": state.engine.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": last.finish_reason,
                }
            ],
            "usage": usage(last.prompt_tokens, last.completion_tokens),
            "metadata": {"conversation_id": turn.conversation_id},
        }
    )


async def _chunks(stream: Any, record: "_Recorder", include_usage: bool) -> AsyncIterator[str]:
    state, turn = record.state, record.turn
    base = {
        "id": f"chatcmpl-{turn.reply_id}",
        "object": "chat.completion.chunk",
        "created": now(),
        "model": state.engine.model_name,
    }
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return sse(
            base | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]} | extra
        )

    parts: list[str] = []
    last = Delta()
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for delta in stream:
            record.saw(delta)
            last = delta
            if delta.text:
                parts.append(delta.text)
                yield chunk({"content": delta.text})
    except BaseException:  # the client vanished: its generation was stopped; keep what was said
        record.abandon("".join(parts))
        raise
    await asyncio.to_thread(record.save, "".join(parts), last)  # acknowledged only once stored
    yield chunk({}, last.finish_reason)
    if include_usage:
        yield sse(base | {"choices": [], "usage": usage(last.prompt_tokens, last.completion_tokens)})
    yield sse("[DONE]")


class _Recorder:
    """Times one reply and stores it."""

    def __init__(self, state: ServerState, turn: Turn, sampling: Sampling, system: str, started: float) -> None:
        self.state, self.turn, self.sampling, self.started = state, turn, sampling, started
        self.params = {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "stop": list(sampling.stop),
            "seed": sampling.seed,
            "system_prompt": system,
        }
        self.first: float | None = None

    def saw(self, delta: Delta) -> None:
        if self.first is None and delta.text:
            self.first = time.perf_counter() - self.started
            self.state.metrics.first_token.labels("chat").observe(self.first)

    def save(self, text: str, last: Delta) -> None:
        elapsed = time.perf_counter() - self.started
        metrics = self.state.metrics
        metrics.latency.labels("chat").observe(elapsed)
        metrics.tokens.labels("prompt").inc(last.prompt_tokens)
        metrics.tokens.labels("completion").inc(last.completion_tokens)
        self.state.store.add_reply(
            self.turn,
            text,
            model=self.state.engine.model_name,
            params=self.params,
            finish_reason=last.finish_reason,
            latency_ms=elapsed * 1000,
            first_token_ms=None if self.first is None else self.first * 1000,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
        )

    def abandon(self, text: str) -> None:
        # not awaited: the task is being cancelled, and every await in it would raise again
        asyncio.get_running_loop().run_in_executor(None, self.save, text, Delta(finish_reason="abort"))
