"""What every engine offers the API layer, and the pieces engines share.

An engine turns a conversation or a prompt into a stream of text deltas (`Delta`), or scores a
prompt (`Scored`, for `/v1/completions` with `logprobs` and `echo`). Two engines implement it:
`TransformersEngine` (the model in this process, requests batched in front of `generate`) and
`UpstreamEngine` (a vLLM or SGLang server). The routes see only this interface, so tests can put
a fake in its place.

`TextDelta` turns a growing list of token ids into text that is safe to send: byte-level BPE
splits one Chinese character over two or three tokens, and decoding a prefix that ends inside a
character yields U+FFFD. The new text is held back until the character is complete (and, when
the request has stop strings, until it cannot be the start of one), so a client never sees a
replacement character or the start of a stop string.
"""

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from almr.serve.schemas import ApiError

REPLACEMENT = "\ufffd"
Messages = list[dict[str, str]]


class EngineError(ApiError):
    """A request the engine refuses or cannot serve (context overflow, full queue, upstream error)."""


def context_overflow(prompt_tokens: int, max_tokens: int, context: int) -> EngineError:
    return EngineError(
        400,
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). "
        "Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def server_full(waiting: int) -> EngineError:
    return EngineError(429, f"the server is full ({waiting} requests waiting); retry shortly", code="server_full")


@dataclass(frozen=True)
class Sampling:
    """Generation settings of one request, after the persona and the request are combined."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Delta:
    """A piece of a reply. The last one of a stream has `finish_reason` ("stop", "length" or
    "abort") and the token counts."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Scored:
    """A completion with per-token log-probabilities, OpenAI's `logprobs` object of a completion."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)


class Engine(Protocol):
    """The one interface the routes call."""

    model_name: str
    kind: str  # "transformers" or "upstream", for /v1/models and /metrics

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def stream_chat(self, messages: Messages, sampling: Sampling) -> "DeltaStream":
        """Queue the request now (refusals raise here, before any byte is sent) and return its stream."""
        ...

    def stream_text(self, prompt: str | list[int], sampling: Sampling) -> "DeltaStream": ...

    async def score(
        self, prompts: Sequence[str | list[int]], sampling: Sampling, top: int, echo: bool
    ) -> list[Scored]: ...

    def queued(self) -> int: ...


class DeltaStream(Protocol):
    """The deltas of one request; `aclose()` (or cancelling the task that iterates it) stops its generation."""

    def __aiter__(self) -> AsyncIterator[Delta]: ...

    async def aclose(self) -> None: ...


class TextDelta:
    """Text of a growing token sequence, released only when whole (see the module docstring)."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already released
        self.text = ""
        self.stopped = False  # a stop string was reached: the text ends before it

    def add(self, token_id: int) -> str:
        """Append a token; return the text that became safe to send."""
        self.ids.append(token_id)
        self.text = self._decode(self.ids)
        if self._stop:
            cut = min(
                (i for i in (self.text.find(s, max(0, self.sent - self._hold)) for s in self._stop) if i >= 0),
                default=-1,
            )
            if cut >= 0:
                self.text, self.stopped = self.text[:cut], True
                return self._release(len(self.text))
        end = len(self.text)
        while end > self.sent and self.text[end - 1] == REPLACEMENT:
            end -= 1  # an incomplete character: wait for its other bytes
        return self._release(max(self.sent, end - self._hold))

    def finish(self) -> str:
        """The rest of the text at the end of the stream, without a trailing incomplete character."""
        return self._release(len(self.text.rstrip(REPLACEMENT)))

    def _release(self, end: int) -> str:
        piece = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return piece


async def collect(deltas: "DeltaStream | AsyncIterator[Delta]") -> Delta:
    """The whole reply of a stream as one Delta."""
    parts, last = [], Delta()
    async for delta in deltas:
        parts.append(delta.text)
        last = delta
    return Delta("".join(parts), last.finish_reason, last.prompt_tokens, last.completion_tokens)


def top_dict(pairs: Sequence[tuple[str, float]]) -> dict[str, float]:
    """OpenAI's top_logprobs dict; two ids that decode to the same text keep the higher value, so the
    dict's maximum stays the true top-1 (lm-eval's greedy check reads it)."""
    out: dict[str, float] = {}
    for text, value in pairs:
        out[text] = max(value, out.get(text, value))
    return out
