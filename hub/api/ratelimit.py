"""A per-client token bucket for endpoints open without login (plate look-ups).

In memory, per process: it slows enumeration from one address; a determined attacker with
many addresses needs a limit at the reverse proxy too (deploy/ notes it).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import Depends, HTTPException, Request, status


class _Buckets:
    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """0 if allowed, else the seconds until a token is back."""
        now = time.monotonic()
        with self._lock:
            if len(self._tokens) > 100_000:
                self._tokens.clear()  # bounded memory; forgiving everyone once is harmless
            tokens, at = self._tokens.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._tokens[client] = (tokens, now)
                return (1 - tokens) / self.rate
            self._tokens[client] = (tokens - 1, now)
            return 0.0


def RateLimited(name: str, per_minute: int, burst: int | None = None) -> Any:
    """A dependency refusing a client's requests beyond ``per_minute`` with 429 (per app)."""
    attr = f"ratelimit_{name}"

    async def check(request: Request) -> None:
        state = request.app.state
        buckets = getattr(state, attr, None)
        if buckets is None:
            buckets = _Buckets(per_minute, burst or per_minute)
            setattr(state, attr, buckets)
        client = request.client.host if request.client else "?"
        wait = buckets.take(client)
        if wait:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"too many {name} requests; try again in {wait:.0f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )

    return Depends(check)
