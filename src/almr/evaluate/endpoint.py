"""One HTTP client for every OpenAI-compatible endpoint almr calls: the model under test of
`almr eval --model URL` (lm-eval's requests go through it, `endpoint_lm`) and of `almr eval judge`,
and the judge itself.

Contract:

- `Endpoint(url, timeout_s, retries, backoff_s)`: `url` is the API base (`http://host:8000/v1`; a
  trailing `/chat/completions` or `/completions` is dropped). `OPENAI_API_KEY`, when set, is sent as
  a bearer token.
- `get(path)` / `post(path, body)` return the decoded JSON reply. A refused or reset connection, a
  timeout, HTTP 408, 409, 429 or 5xx, or a reply that is not JSON is retried up to `retries` more
  times, waiting `backoff_s`·2^k seconds (at most 30; a `Retry-After` of up to 60 s is honoured);
  any other HTTP error is not retried. The last failure raises `EndpointError`, an `AlmrError` (the
  CLI's exit code 2) whose message is one line: the method and URL, what happened — the HTTP status
  with the OpenAI error body's type and message (`{"error": {...}}`, vLLM's `{"object": "error", ...}`,
  FastAPI's `{"detail": ...}`), or the connection error — the attempts made, and what to check.
- `models()`: the ids of GET /models. `model_name(requested)`: `requested`, checked against that
  list when the server lists models; else the first model listed (vLLM and `almr serve` serve one);
  refused, naming `--endpoint-model`, when the server lists none.
- `chat(messages, model, **params)`: the text of the first choice of POST /chat/completions; a reply
  without text is an `EndpointError` too (not retried: a server answers the same again).
"""

import email.utils
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from almr.errors import AlmrError

RETRIED_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_WAIT_S = 30.0
MAX_RETRY_AFTER_S = 60.0


class EndpointError(AlmrError):
    """An endpoint call that failed for good; `status` is the HTTP status (None: no HTTP reply)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, unreachable: bool = False) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.unreachable = unreachable

    @property
    def fatal(self) -> bool:
        """True when every further request would fail the same way: the server cannot be reached, wants
        credentials, or has no such route or model (a per-item failure is anything else)."""
        return self.unreachable or self.status in (401, 403, 404, 405)


def api_base(url: str) -> str:
    """`http://host:8000/v1` from itself or from its `/chat/completions` or `/completions` URL."""
    base = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        base = base.removesuffix(suffix)
    return base


def one_line(text: str, limit: int = 300) -> str:
    """`text` with its whitespace runs collapsed to single spaces, cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_detail(body: bytes | str) -> str:
    """The error an OpenAI-compatible server put in a reply body, as one line: `Type: message`."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return one_line(text)
    node = doc.get("error", doc) if isinstance(doc, dict) else doc
    if isinstance(node, dict):
        message = node.get("message") or node.get("detail") or node.get("msg")
        kind = node.get("type") or node.get("code")
        if isinstance(message, list | dict):  # FastAPI's validation errors: a list of {loc, msg, type}
            message = json.dumps(message, ensure_ascii=False)
        if message:
            return one_line(f"{kind}: {message}" if isinstance(kind, str) and kind else str(message))
    return one_line(node if isinstance(node, str) else json.dumps(doc, ensure_ascii=False))


def _hint(err: "EndpointError", path: str) -> str:
    status = err.status
    if err.unreachable:
        return "is the server running and reachable at this address?"
    if status is None:
        return (
            "the server is slow or stuck: check its load, or raise eval.timeout_s (eval.judge.timeout_s for the judge)"
        )
    if status == 404:
        return (f"check that the URL is the API base (…/v1) and that the server has {path} and serves the model "
                "asked for (--endpoint-model; GET …/v1/models lists them)")  # fmt: skip
    if status in (401, 403):
        return "the server wants credentials: set OPENAI_API_KEY"
    if status < 300:
        return "the server does not answer as the OpenAI API does"
    if status >= 500:
        return "the server failed; its log says why"
    return "the request was refused; see the server's message"


class Endpoint:
    """An OpenAI-compatible API base URL; see the module doc."""

    def __init__(self, url: str, timeout_s: float = 120.0, retries: int = 3, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        self.url = api_base(url)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self._models: list[str] | None = None

    # ------------------------------------------------------------------ requests

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None) -> Any:
        url = self.url + path
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                return self._once(method, url, body)
            except EndpointError as err:
                if not err.retryable or attempt == attempts - 1:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise EndpointError(f"{method} {url}: {err}{tries}; {_hint(err, path)}", err.status,
                                        err.retryable, unreachable=err.unreachable) from None  # fmt: skip
                wait = err.retry_after
                self.sleep(min(wait, MAX_RETRY_AFTER_S) if wait else min(self.backoff_s * 2**attempt, MAX_WAIT_S))
        raise AssertionError("unreachable")

    def _once(self, method: str, url: str, body: Mapping[str, Any] | None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as err:
            detail = error_detail(err.read())
            what = f"HTTP {err.code} ({detail})" if detail else f"HTTP {err.code} with an empty body"
            wait = _retry_after(err.headers.get("Retry-After"))
            raise EndpointError(what, err.code, err.code in RETRIED_STATUS, wait) from None
        except TimeoutError:
            raise EndpointError(f"no reply within {self.timeout_s:g} s", None, True) from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, TimeoutError):
                raise EndpointError(f"no reply within {self.timeout_s:g} s", None, True) from None
            why = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
            raise EndpointError(f"cannot connect ({why})", None, True, unreachable=True) from None
        except (ConnectionError, OSError) as err:  # reset mid-reply, remote closed
            raise EndpointError(f"connection failed ({err.strerror or err})", None, True) from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(f"reply is not JSON: {one_line(raw.decode('utf-8', 'replace'), 120)!r}", 200,
                                True) from None  # fmt: skip

    # ------------------------------------------------------------------ the OpenAI API

    def models(self) -> list[str]:
        """The model ids GET /models lists (read once)."""
        if self._models is None:
            reply = self.get("/models")
            data = reply.get("data") if isinstance(reply, dict) else None
            if not isinstance(data, list):
                raise EndpointError(f"GET {self.url}/models: expected {{\"data\": [{{\"id\": …}}]}}, got "
                                    f"{one_line(json.dumps(reply), 120)}")  # fmt: skip
            self._models = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
        return self._models

    def model_name(self, requested: str | None = None, flag: str = "--endpoint-model") -> str:
        """`requested` (checked against GET /models when the server lists models), else the first model
        the server lists."""
        try:
            served = self.models()
        except EndpointError as err:
            if err.status in (404, 405, 501):  # a server without /models
                if requested:  # trust the name given
                    return requested
                raise EndpointError(f"{err}; or name the served model with {flag} NAME", err.status) from None
            raise
        if requested:
            if served and requested not in served:
                raise EndpointError(f"{self.url} does not serve model {requested!r} ({flag}); it serves: "
                                    f"{', '.join(served)}")  # fmt: skip
            return requested
        if not served:
            raise EndpointError(f"GET {self.url}/models lists no model; name the served one with {flag} NAME")
        return served[0]

    def chat(self, messages: Sequence[Mapping[str, str]], model: str, **params: Any) -> str:
        """The reply text of POST /chat/completions (`params`: max_tokens, temperature, …)."""
        reply = self.post("/chat/completions", {"model": model, "messages": list(messages), **params})
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str) or not content.strip():
            raise EndpointError(f"POST {self.url}/chat/completions: the reply has no text: "
                                f"{one_line(json.dumps(reply, ensure_ascii=False), 160)}", 200)  # fmt: skip
        return content


def _retry_after(value: str | None) -> float | None:
    """Seconds of a `Retry-After` header (a number, or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
