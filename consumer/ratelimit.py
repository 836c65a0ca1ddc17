"""Per-channel rate limit: `per_second` sustained, up to `burst` at once, and pauses a receiver
asks for (429, Retry-After) that hold the whole lane, not just one delivery."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .catalog import Channel


class RateLimiter(Protocol):
    async def acquire(self) -> float:
        """Wait for one permit; return how long that took, in seconds."""

    def pause(self, seconds: float) -> None:
        """Grant no permit for `seconds` from now (the receiver asked us to slow down)."""

    def free_in(self) -> float:
        """Seconds until a permit would be granted, without taking one."""

    def paused_for(self) -> float:
        """Seconds left of a pause the receiver asked for; 0 when none is running."""

    def share(self) -> float | None:
        """The rate this process can expect from the limit (a fleet-wide limit divided among
        the replicas); None without a rate limit. What parked work is booked at."""


class LocalLimiter:
    """GCRA with reservations: each caller is given its own slot in time and sleeps until it.

    Reserving instead of polling means no busy loop, no thundering herd, and FIFO order among
    waiters. Without `per_second` only pauses limit it.
    """

    def __init__(
        self,
        per_second: float | None = None,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,  # None: asyncio.sleep
    ) -> None:
        self._interval = 0.0 if per_second is None else 1.0 / per_second
        self._tolerance = self._interval * (max(1, burst) - 1)  # how far ahead a burst may go
        self._clock = clock
        self._sleep = sleep
        self._tat = -math.inf  # theoretical arrival time of the next request at the full rate
        self._paused_until = -math.inf
        self._last_slot = -math.inf

    def reserve(self) -> float:
        """Take the next slot and return how long to wait for it."""
        now = self._clock()
        slot = max(now, self._tat - self._tolerance, self._paused_until)
        self._tat = max(self._tat, slot) + self._interval
        self._last_slot = slot
        wait = slot - now
        return wait if wait > 1e-9 else 0.0  # float residue of the sums is no reason to sleep

    def take_now(self) -> bool:
        """Take a permit if one is free this instant (no pause running); else take nothing."""
        now = self._clock()
        slot = max(now, self._tat - self._tolerance, self._paused_until)
        if slot - now > 1e-9:
            return False
        self._tat = max(self._tat, slot) + self._interval
        self._last_slot = slot
        return True

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def reserved_until(self) -> float:
        """The time of the last slot given out so far (on its clock)."""
        return self._last_slot

    def taken_until(self, when: float) -> None:
        """Count every slot up to `when` as given out already (by another limiter that stood
        in for this one): the next slot follows it, with no burst on top."""
        self._tat = max(self._tat, when + self._interval + self._tolerance)

    def free_in(self) -> float:
        return max(0.0, self._tat - self._tolerance - self._clock(), self.paused_for())

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def share(self) -> float | None:
        return 1.0 / self._interval if self._interval else None

    async def acquire(self) -> float:
        waited = 0.0
        while True:
            wait = self.reserve()
            if wait <= 0:
                return waited
            await (self._sleep or asyncio.sleep)(wait)
            waited += wait
            if self.paused_for() <= 0:
                return waited
            # A pause arrived while this caller slept on a slot reserved before it.


def limiter_for(channel: Channel) -> LocalLimiter:
    """The channel's own limiter in this process: its rate limit, or only the pauses."""
    if channel.rate_limit is None:
        return LocalLimiter()
    return LocalLimiter(channel.rate_limit.per_second, channel.rate_limit.capacity)
