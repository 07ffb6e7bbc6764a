"""Bearer tokens and per-user limits.

A token is 32 random bytes (`secrets.token_urlsafe`), shown once when it is made and stored only
as its SHA-256: with that much entropy a fast hash is enough (no password-style stretching is
needed, and lookup stays one indexed query). Admins are users with `is_admin`: they export
conversations and delete other users' data.

Rate limits are per user and per process: a sliding window of request times over the last minute.
"""

import hashlib
import secrets
import time
from collections import defaultdict, deque

TOKEN_PREFIX = "almr-"
LOCAL_USER = "local"  # every request's user when serve.auth.required is off (loopback servers only)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class RateLimiter:
    """At most `per_minute` requests per key in any 60-second window."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        times = self._seen[key]
        while times and now - times[0] >= 60:
            times.popleft()
        if len(times) >= self.per_minute:
            return False
        times.append(now)
        return True
