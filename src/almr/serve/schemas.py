"""The OpenAI request bodies the server accepts, and its error envelope.

Unknown fields are refused (400), not ignored: a client that sends a parameter this server does
not know must learn that it had no effect. Known OpenAI parameters that the engines cannot
honour (`n > 1`, `logit_bias`, tools, penalties, chat `logprobs`) are refused by `unsupported`
with the parameter's name, for the same reason."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class ApiError(Exception):
    """A request refused with an HTTP status and OpenAI's error envelope."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    kind = ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampled(_Strict):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None  # metadata.conversation_id puts the turn into that conversation


class CompletionRequest(_Sampled):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


def unsupported(request: _Sampled) -> tuple[str, str] | None:
    """(param, reason) of the first parameter that the engines cannot honour, or None."""
    if request.n not in (None, 1):
        return "n", "n > 1 is not supported: send one request per reply"
    if request.logit_bias:
        return "logit_bias", "logit_bias is not supported"
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name) not in (None, 0, 0.0):
            return name, f"{name} is not supported (the engines apply none)"
    if request.stream_options is not None and not request.stream:
        return "stream_options", "stream_options is only allowed with stream=true"
    if isinstance(request, ChatRequest):
        if request.logprobs or request.top_logprobs:
            return "logprobs", "log-probabilities are served by /v1/completions only"
        if request.tools or request.tool_choice not in (None, "none"):
            return "tools", "tool calls are not supported"
        if request.response_format and request.response_format.get("type") not in (None, "text"):
            return "response_format", "only response_format type 'text' is supported"
    if isinstance(request, CompletionRequest):
        if request.best_of not in (None, 1):
            return "best_of", "best_of > 1 is not supported"
        if request.suffix:
            return "suffix", "suffix is not supported"
        if request.stream and request.logprobs is not None:
            return "logprobs", "logprobs are not supported with stream=true"
    return None
