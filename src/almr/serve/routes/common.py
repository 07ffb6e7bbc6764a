"""What the generation routes share: the model check, parameter refusals, SSE framing."""

import json
import time
from typing import Any

from almr.serve.engine import Engine
from almr.serve.schemas import ApiError, unsupported


def check_request(body: Any, engine: Engine) -> None:
    """404 for a model this server does not serve; 400 for a parameter it cannot honour."""
    if body.model != engine.model_name:
        raise ApiError(
            404,
            f"The model `{body.model}` does not exist; this server serves `{engine.model_name}`",
            param="model",
            code="model_not_found",
        )
    refused = unsupported(body)
    if refused is not None:
        param, reason = refused
        raise ApiError(400, reason, param=param, code="unsupported_parameter")


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def now() -> int:
    return int(time.time())
