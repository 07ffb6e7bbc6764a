"""POST /v1/completions: text completion of one or many prompts (strings or token ids), with
`logprobs` and `echo` as lm-eval's local-completions and vLLM use them. Not a conversation, so
not stored; the persona does not apply."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from almr.serve.deps import CurrentUser, State
from almr.serve.engine import Sampling, collect
from almr.serve.routes.common import check_request, now, sse, usage
from almr.serve.schemas import ApiError, CompletionRequest

router = APIRouter()


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, user: CurrentUser, state: State) -> Any:
    started = time.perf_counter()
    check_request(body, state.engine)
    prompts = body.prompts()
    if not prompts:
        raise ApiError(400, "prompt is empty", param="prompt")
    sampling = Sampling(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=body.max_tokens or 0,
        stop=body.stops(),
        seed=body.seed,
    )
    engine, rid = state.engine, f"cmpl-{int(started * 1e6):x}"
    base = {"id": rid, "object": "text_completion", "created": now(), "model": engine.model_name}
    if body.stream:
        if len(prompts) != 1:
            raise ApiError(400, "stream=true takes one prompt", param="prompt")
        stream = engine.stream_text(prompts[0], sampling)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_chunks(stream, base, include_usage), media_type="text/event-stream")
    if body.logprobs is not None or body.echo or sampling.max_tokens == 0:
        scored = await engine.score(prompts, sampling, top=max(1, body.logprobs or 0), echo=body.echo)
        choices = [
            {
                "index": i,
                "text": s.text,
                "finish_reason": s.finish_reason,
                "logprobs": None
                if body.logprobs is None
                else {
                    "tokens": s.tokens,
                    "token_logprobs": s.token_logprobs,
                    "top_logprobs": s.top_logprobs,
                    "text_offset": s.text_offset,
                },
            }
            for i, s in enumerate(scored)
        ]
        counts = [(s.prompt_tokens, s.completion_tokens) for s in scored]
    else:
        streams = [engine.stream_text(p, sampling) for p in prompts]  # all queued at once: one batch
        finals = await asyncio.gather(*(collect(s) for s in streams))
        choices = [
            {"index": i, "text": f.text, "finish_reason": f.finish_reason, "logprobs": None}
            for i, f in enumerate(finals)
        ]
        counts = [(f.prompt_tokens, f.completion_tokens) for f in finals]
    prompt_tokens, completion_tokens = sum(c[0] for c in counts), sum(c[1] for c in counts)
    state.metrics.latency.labels("completions").observe(time.perf_counter() - started)
    state.metrics.tokens.labels("prompt").inc(prompt_tokens)
    state.metrics.tokens.labels("completion").inc(completion_tokens)
    return JSONResponse(base | {"choices": choices, "usage": usage(prompt_tokens, completion_tokens)})


async def _chunks(stream: Any, base: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
    last = None
    try:
        async for delta in stream:
            last = delta
            if delta.text or delta.finish_reason:
                yield sse(
                    base
                    | {
                        "choices": [
                            {"index": 0, "text": delta.text, "logprobs": None, "finish_reason": delta.finish_reason}
                        ]
                    }
                )
    finally:
        await stream.aclose()
    if include_usage and last is not None:
        yield sse(base | {"choices": [], "usage": usage(last.prompt_tokens, last.completion_tokens)})
    yield sse("[DONE]")
