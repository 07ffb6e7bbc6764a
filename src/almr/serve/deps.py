"""What the routes share, as FastAPI dependencies: the server's state, the current user, admins."""

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from almr.serve.auth import LOCAL_USER, RateLimiter, bearer, hash_token
from almr.serve.config import ServeConfig
from almr.serve.engine import Engine
from almr.serve.metrics import Metrics
from almr.serve.schemas import ApiError
from almr.serve.store import Store, User


@dataclass
class ServerState:
    config: ServeConfig
    engine: Engine
    store: Store
    limiter: RateLimiter
    metrics: Metrics
    local_user: User | None = None


def get_state(request: Request) -> ServerState:
    return request.app.state.almr


State = Annotated[ServerState, Depends(get_state)]


async def current_user(request: Request, state: State) -> User:
    """The user the bearer token names (refused with 401), within its rate limit (429)."""
    if not state.config.auth.required:
        if state.local_user is None:
            state.local_user = await asyncio.to_thread(state.store.add_user, LOCAL_USER, None)
        user = state.local_user
    else:
        token = bearer(request.headers.get("authorization"))
        if token is None:
            raise ApiError(
                401,
                "no API key: send Authorization: Bearer TOKEN (made with `almr serve token add NAME`)",
                code="invalid_api_key",
            )
        found = await asyncio.to_thread(state.store.user_by_token, hash_token(token))
        if found is None:
            raise ApiError(401, "incorrect API key provided", code="invalid_api_key")
        user = found
    if not state.limiter.allow(user.name):
        raise ApiError(
            429,
            f"rate limit of {state.limiter.per_minute} requests per minute reached; retry later",
            code="rate_limit_exceeded",
        )
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise ApiError(403, "this needs an admin token (`almr serve token add NAME --admin`)")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
