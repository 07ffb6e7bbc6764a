"""The upstream engine: generation forwarded to a vLLM or SGLang server's OpenAI API, with this
server's persona, auth, limits and conversation store in front. The upstream applies the chat
template it was started with: `almr serve MODEL_DIR --print-vllm-command` prints the `vllm serve`
line that uses the model directory's own template file, so both engines render the same prompt."""

import json
import shlex
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from almr.serve.engine import Delta, EngineError, Messages, Sampling, Scored, server_full


def vllm_command(
    model_dir: str | Path, served_name: str, *, host: str = "127.0.0.1", port: int = 8001, dtype: str = "bfloat16"
) -> str:
    """The `vllm serve` line for the model directory: its chat template file, the served name this
    server forwards to, and the model's own generation_config.json (`--generation-config vllm`
    makes vLLM ignore it, so the persona's settings from this server are the only ones applied)."""
    model_dir = Path(model_dir)
    template = model_dir / "chat_template.jinja"
    parts = [
        "vllm",
        "serve",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--generation-config",
        "vllm",
    ]
    if template.is_file():
        parts += ["--chat-template", str(template)]
    return shlex.join(parts)


class _UpstreamStream:
    def __init__(self, engine: "UpstreamEngine", path: str, body: dict[str, Any]) -> None:
        self.engine, self.path, self.body = engine, path, body
        self._iter: AsyncIterator[Delta] | None = None
        self._response: httpx.Response | None = None

    def __aiter__(self) -> AsyncIterator[Delta]:
        self._iter = self._run()
        return self._iter

    async def _run(self) -> AsyncIterator[Delta]:
        self.engine.in_flight += 1
        try:
            request = self.engine.client.build_request("POST", self.path, json=self.body)
            self._response = await self.engine.client.send(request, stream=True)
            if self._response.status_code != 200:
                text = (await self._response.aread()).decode(errors="replace")
                raise EngineError(
                    self._response.status_code if self._response.status_code < 500 else 502,
                    f"upstream {self.engine.url}: {_message(text)}",
                )
            finish, prompt_tokens, completion_tokens = None, 0, 0
            async for line in self._response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
                    completion_tokens = chunk["usage"].get("completion_tokens", 0)
                for choice in chunk.get("choices", []):
                    piece = choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
                    if piece:
                        yield Delta(piece)
                    finish = choice.get("finish_reason") or finish
            yield Delta("", finish or "stop", prompt_tokens, completion_tokens)
        finally:
            self.engine.in_flight -= 1
            if self._response is not None:
                await self._response.aclose()  # closing the upstream stream aborts the request there too

    async def aclose(self) -> None:
        if self._iter is not None:
            await self._iter.aclose()  # type: ignore[attr-defined]


class UpstreamEngine:
    """Forwards to an OpenAI-compatible server at `url` (http://HOST:PORT/v1)."""

    kind = "upstream"

    def __init__(
        self,
        url: str,
        *,
        model_name: str,
        upstream_model: str | None = None,
        api_key: str | None = None,
        max_in_flight: int = 256,
        timeout_s: float = 600.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.upstream_model = upstream_model or model_name
        self.api_key = api_key
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.in_flight = 0

    async def start(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.timeout_s)

    async def close(self) -> None:
        await self.client.aclose()

    def queued(self) -> int:
        return self.in_flight

    def _body(self, sampling: Sampling) -> dict[str, Any]:
        if self.in_flight >= self.max_in_flight:
            raise server_full(self.in_flight)
        body: dict[str, Any] = {
            "model": self.upstream_model,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    def stream_chat(self, messages: Messages, sampling: Sampling) -> _UpstreamStream:
        return _UpstreamStream(self, "/chat/completions", self._body(sampling) | {"messages": messages})

    def stream_text(self, prompt: str | list[int], sampling: Sampling) -> _UpstreamStream:
        return _UpstreamStream(self, "/completions", self._body(sampling) | {"prompt": prompt})

    async def score(self, prompts: Sequence[str | list[int]], sampling: Sampling, top: int, echo: bool) -> list[Scored]:
        body = self._body(sampling) | {"prompt": list(prompts), "logprobs": top, "echo": echo, "stream": False}
        body.pop("stream_options")
        reply = await self.client.post("/completions", json=body)
        if reply.status_code != 200:
            raise EngineError(
                reply.status_code if reply.status_code < 500 else 502, f"upstream {self.url}: {_message(reply.text)}"
            )
        data = reply.json()
        out = []
        for choice in sorted(data["choices"], key=lambda c: c["index"]):
            lp = choice.get("logprobs") or {}
            out.append(
                Scored(
                    choice["text"],
                    choice.get("finish_reason") or "length",
                    0,
                    0,
                    lp.get("tokens", []),
                    lp.get("token_logprobs", []),
                    lp.get("top_logprobs", []),
                    lp.get("text_offset", []),
                )
            )
        return out


def _message(text: str) -> str:
    try:
        return json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return text[:300]
