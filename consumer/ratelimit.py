"""Per-channel token bucket: `per_second` sustained, up to `burst` at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class RateLimiter(Protocol):
    async def acquire(self) -> None: ...


class Unlimited:
    async def acquire(self) -> None:
        return None


class TokenBucket:
    """Each caller reserves a token, possibly going into debt, and waits until it is paid.

    Reserving instead of polling gives every waiter its own slot in time: no busy loop, no
    thundering herd, and FIFO order among waiters.
    """

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = per_second
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._updated = clock()

    def reserve(self) -> float:
        """Take one token and return how long to wait before using it."""
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
