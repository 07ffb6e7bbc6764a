"""lm-eval's `local-completions` and `local-chat-completions` with their requests sent by almr's
`Endpoint`: one client (its retries, backoff and one-line errors) for every endpoint almr calls.

lm-eval's own path (`requests.post` under tenacity) prints the server's reply as a warning and ends
in a traceback; here a failed request is an `EndpointError` (exit code 2) naming the URL, and a
reply without the expected fields (a server that does not return `logprobs` with `echo`) says so.
lm-eval's retry loop is kept to one attempt, so requests are retried by the client only.
"""

import copy
import json
from typing import Any

from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

from almr.evaluate.endpoint import Endpoint, EndpointError, one_line


class _ThroughEndpoint:
    """The `model_call` of lm-eval's API models, through an `Endpoint`."""

    endpoint: Endpoint
    path: str

    def _attach(self, endpoint: Endpoint, path: str) -> None:
        self.endpoint, self.path = endpoint, path
        self.max_retries = 1  # lm-eval's tenacity loop: one attempt; the endpoint retries

    def model_call(self, messages: Any, *, generate: bool = True, gen_kwargs: dict | None = None,
                   **kwargs: Any) -> Any:  # fmt: skip
        payload = self._create_payload(  # type: ignore[attr-defined]
            self.create_message(messages),  # type: ignore[attr-defined]
            generate=generate,
            gen_kwargs=copy.deepcopy(gen_kwargs),
            seed=self._seed,  # type: ignore[attr-defined]
            eos=self.eos_string,  # type: ignore[attr-defined]
            **kwargs,
        )
        reply = self.endpoint.post(self.path, payload)
        if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list) or not reply["choices"]:
            raise EndpointError(f"POST {self.endpoint.url}{self.path}: the reply has no choices: "
                                f"{one_line(json.dumps(reply, ensure_ascii=False), 160)}", 200)  # fmt: skip
        return reply


class EndpointCompletions(_ThroughEndpoint, LocalCompletionsAPI):
    """`local-completions` (scoring by `echo` + `logprobs`, generation) through an `Endpoint`."""

    def __init__(self, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(base_url=endpoint.url + "/completions", **kwargs)
        self._attach(endpoint, "/completions")

    def parse_logprobs(self, outputs: Any, tokens: Any = None, ctxlens: Any = None, **kwargs: Any) -> Any:
        try:
            return LocalCompletionsAPI.parse_logprobs(outputs, tokens, ctxlens, **kwargs)
        except (KeyError, TypeError, IndexError, AttributeError, ValueError):
            raise EndpointError(
                f"POST {self.endpoint.url}/completions: the reply to a scoring request holds no token "
                "log-probabilities (choices[].logprobs.token_logprobs and top_logprobs); log-likelihood tasks need "
                "a server that returns them with echo=true, as vLLM does — or leave those tasks out"
            ) from None


class EndpointChat(_ThroughEndpoint, LocalChatCompletion):
    """`local-chat-completions` (generation in chat form) through an `Endpoint`."""

    def __init__(self, endpoint: Endpoint, **kwargs: Any) -> None:
        super().__init__(base_url=endpoint.url + "/chat/completions", **kwargs)
        self._attach(endpoint, "/chat/completions")
