"""A channel's rate limit for the whole fleet, with the lane's `RateLimiter` interface.

Permits come from a shared `PermitSource` in small batches, each permit a reserved slot in
time; the lane's workers take them in order and sleep until their slot, as with the local
limiter. The batch follows the replica's own demand (what is waiting now plus what the last
second suggests for the next fifth of one, at most its share of the rate for that long), up to
a fifth of a second of the channel's rate: 1 permit per round trip for a 5/s channel, up to
100 for a 500/s one. Each slot is placed where Redis meant it, on Redis's clock as this replica
last saw it answer promptly: an answer read late (a busy event loop) does not shift its slots
onto the next replica's batch; its slots that passed meanwhile are dropped, never spent late in
a bunch.

`free_in()` and `paused_for()` answer from what the last grant said, without a round trip.
While the shared source does not answer, a local limiter at this replica's share of the rate
stands in.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from consumer.ratelimit import LocalLimiter

from .permits import Grant, PermitSource
from .shared import Availability, FleetUnavailable, share

LOOKAHEAD: Final = 0.2  # seconds of demand one round trip fetches permits for, at most
_STALE: Final = 0.05  # a slot is good this long after its time, then dropped unused
# After a fallback, this replica keeps to its share as well as to Redis's permits this long:
# the other replicas' probes find Redis within 2 s (+ 20 % jitter) of this one's, and until
# then they send their shares, which Redis does not see.
REJOIN_SECONDS: Final = 3.0


class _RedisClock:
    """Redis's clock on ours: the smallest (arrival - Redis's time) of the last half minute.
    A reply read promptly gives the true difference plus a round trip's fraction; one read
    late gives more, and is not believed."""

    WINDOW: Final = 30.0

    def __init__(self) -> None:
        self._offsets: deque[tuple[float, float]] = deque()  # (our time, offset), increasing

    def ours(self, at: float, sent: float, arrived: float) -> float:
        """When Redis's time `at` was on our clock, for an answer to a call sent at `sent`
        that arrived at `arrived`: never before the call, never after its answer."""
        offset = arrived - at
        offsets = self._offsets
        while offsets and offsets[-1][1] >= offset:
            offsets.pop()
        offsets.append((arrived, offset))
        while offsets[0][0] < arrived - self.WINDOW:
            offsets.popleft()
        ours = at + offsets[0][1]
        if ours < sent:  # Redis's clock moved back (a step, a failover): start afresh
            self.forget()
            return self.ours(at, sent, arrived)
        return ours

    def forget(self) -> None:
        self._offsets.clear()


class _Demand:
    """Permits this replica asks for per second: the last whole second, or the current one
    when it is busier (so a burst is seen within a quarter of a second, not after one)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._since = clock()
        self._count = 0
        self._last = 0.0

    def arrived(self) -> None:
        self._count += 1
        now = self._clock()
        if now - self._since >= 1.0:
            self._last = self._count / (now - self._since)
            self._since, self._count = now, 0

    def expected(self, seconds: float) -> int:
        current = self._count / max(self._clock() - self._since, 0.25)
        return int(max(self._last, current) * seconds)


class FleetLimiter:
    def __init__(
        self,
        permits: PermitSource,
        availability: Availability,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._permits = permits
        self._availability = availability
        self._per_second = per_second
        self._burst = max(1, burst)
        self._most = max(1, int(per_second * LOOKAHEAD))
        self._clock = clock
        self._sleep = sleep
        self._slots: deque[float] = deque()  # reserved slot times, on our clock, ascending
        self._fetching = asyncio.Lock()  # one round trip at a time; the rest queue in order
        self._waiting = 0  # callers with no slot yet
        self._demand = _Demand(clock)
        self._next_free_at = -math.inf
        self._paused_until = -math.inf
        self._fallback: LocalLimiter | None = None
        self._fallback_replicas = 0
        self._last_slot = -math.inf  # the latest shared slot this replica was granted
        self._on_fallback = False
        self._resume = False  # the next grant follows a fallback: no burst left to grant
        self._rejoining_until = -math.inf  # keeps to its share as well until then
        self._redis_clock = _RedisClock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def acquire(self) -> float:
        started = self._clock()
        self._demand.arrived()
        overslept = rejoined = False
        while True:
            if not self._availability.shared:
                return self._clock() - started + await self._local().acquire()
            if self._on_fallback and await self._fallback_drained():
                continue
            if not rejoined and self._clock() < self._rejoining_until:
                # Just back: the others may still send their shares, which Redis does not
                # see. Keep to this replica's share too (first, so the shared slot that
                # follows is fresh).
                rejoined = True
                assert self._fallback is not None  # a fallback preceded
                await self._fallback.acquire()
                continue
            slot = self._take()
            if slot is None:
                await self._refill()
                continue
            wait = slot - self._clock()
            if wait > 0:
                await self._sleep(wait)
                if not overslept and self._clock() - slot > _STALE:
                    # The event loop woke this caller late (it was busy): the slots of every
                    # caller it held back have passed together, and spent now they would go
                    # out in a bunch. Take the next one instead (once: a loop that is always
                    # late must still send).
                    overslept = True
                    continue
            if self.paused_for() <= 0:
                return self._clock() - started
            # A pause arrived while this caller slept: its slot is void.

    def _take(self) -> float | None:
        now = self._clock()
        slots = self._slots
        while slots and (slots[0] + _STALE < now or slots[0] < self._paused_until):
            slots.popleft()
        return slots.popleft() if slots else None

    async def _refill(self) -> None:
        self._waiting += 1
        try:
            async with self._fetching:
                if self._slots or not self._availability.shared:
                    return  # the round trip this caller queued behind brought enough
                # What this replica will ask for soon, but no more than its share of the
                # rate: a replica that was granted much must not get ever bigger batches.
                fair = share(self._per_second, self._availability.replicas()) * LOOKAHEAD
                soon = min(self._demand.expected(LOOKAHEAD), int(fair))
                wanted = min(self._most, self._waiting + soon)
                sent = self._clock()
                try:
                    grant = await self._permits.grant(wanted, self._resume)
                except FleetUnavailable:
                    return  # the caller goes on with the fallback
                self._resume = False
                self._learn(grant, sent)
        finally:
            self._waiting -= 1

    def _learn(self, grant: Grant, sent: float) -> None:
        # Offsets count from when Redis answered, placed on our clock.
        answered = self._redis_clock.ours(grant.at, sent, self._clock())
        self._slots.extend(answered + offset for offset in grant.slots)
        if grant.slots:
            self._last_slot = max(self._last_slot, answered + grant.slots[-1])
        self._next_free_at = answered + grant.next_free
        self._paused_until = max(self._paused_until, answered + grant.paused_for)

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        if self._fallback is not None:
            self._fallback.pause(seconds)
        if self._availability.shared:
            task = asyncio.create_task(self._share_pause(seconds))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _share_pause(self, seconds: float) -> None:
        with contextlib.suppress(FleetUnavailable):  # the fallback holds the pause meanwhile
            await self._permits.pause(seconds)

    def free_in(self) -> float:
        if not self._availability.shared:
            return self._local().free_in()
        now = self._clock()
        ready = self._slots[0] if self._slots else self._next_free_at
        return max(0.0, ready - now, self.paused_for())

    def share(self) -> float | None:
        return share(self._per_second, self._availability.replicas())

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def _local(self) -> LocalLimiter:
        """This replica's share of the limit; remade when the number of replicas changes.

        Switching either way, the slots one side gave out are honoured and the other side's
        follow them: the replica never runs both at once, nor adds a fresh burst on top."""
        replicas = self._availability.replicas()
        if self._fallback is None or replicas != self._fallback_replicas:
            previous = self._fallback
            self._fallback = LocalLimiter(
                share(self._per_second, replicas),
                max(1, self._burst // replicas),
                self._clock,
                self._sleep,
            )
            self._fallback_replicas = replicas
            if previous is not None and self._on_fallback:
                self._fallback.taken_until(previous.reserved_until)
            if (paused := self.paused_for()) > 0:
                self._fallback.pause(paused)
        if not self._on_fallback:
            self._on_fallback = True
            self._fallback.taken_until(self._last_slot)
        return self._fallback

    async def _fallback_drained(self) -> bool:
        """Back from the fallback: wait (once) for the slots it gave out before asking for
        shared ones. True when this caller waited."""
        assert self._fallback is not None  # set together with _on_fallback
        left = self._fallback.reserved_until - self._clock()
        if left <= 0:
            self._on_fallback = False
            self._resume = True
            self._rejoining_until = self._clock() + REJOIN_SECONDS
            self._redis_clock.forget()  # it may be another Redis now, on another clock
            return False
        await self._sleep(left)
        return True

    async def close(self) -> None:
        """Wait for the pauses on their way to Redis (each bounded by the link's timeout)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
