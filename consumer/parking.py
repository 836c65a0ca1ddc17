"""When a lane has more than it can send in time, and when parked work should come back.

A lane never holds more work than it can send within `retry.max_backlog_seconds`; the overflow
is parked on the delay path. This module holds the evidence for that decision (what the lane
sustains) and the booking that spaces parked work out, so that it comes back while the lane still
has work ahead of it, and rarely has to be parked twice.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .catalog import Channel
from .config import RetryConfig
from .ratelimit import RateLimiter

_MIN_PARK_SECONDS = 1.0
_PARK_GROWTH = 1.5  # the shortest park grows this much with each park of the same delivery


class Throughput:
    """Deliveries per second the lane sustains, learned only while it was saturated (work
    waiting the whole tick), so an idle lane never looks slow. None until first measured:
    a lane parks nothing before it has evidence, except that a rate limit is known up front.

    `best` remembers the best recent tick, fading slowly: a lane slowed by a passing stall of
    the whole process (not by its receiver) is paced by what it showed it can do."""

    _FADE = 0.98  # per tick: the best rate of a minute ago counts for little

    def __init__(self, ceiling: float | None) -> None:
        self._ceiling = ceiling
        self.per_second: float | None = ceiling
        self.best = ceiling or 0.0
        self._completed = 0

    def completed(self) -> None:
        self._completed += 1

    def tick(self, seconds: float, saturated: bool) -> None:
        observed, self._completed = self._completed / seconds, 0
        self.best = self._capped(max(observed, self.best * self._FADE))
        previous = self.per_second
        if not saturated:
            # Work ran out before the lane did: it can do at least this much. This is what lets
            # a recovered receiver earn its capacity back.
            if previous is not None and observed > previous:
                self.per_second = self._capped(observed)
            return
        self.per_second = self._capped(
            observed if previous is None else 0.7 * previous + 0.3 * observed
        )

    def skip(self) -> None:
        """A tick the receiver paused us for says nothing about what it sustains."""
        self._completed = 0

    def pacing(self, fallback: float) -> float:
        """The rate to book parked work at: the limit when there is one, else the better of
        what the lane does now and what it did lately."""
        if self._ceiling is not None:
            return self._ceiling
        return max(self.per_second or 0.0, self.best) or fallback

    def sustained(self) -> float | None:
        """The better of the current and the recent rate; None before any evidence."""
        if self.per_second is None:
            return None
        return max(self.per_second, self.best)

    def _capped(self, rate: float) -> float:
        return rate if self._ceiling is None else min(rate, self._ceiling)


class Parking:
    """One lane's view of its own backlog: whether it is overloaded, and when each parked
    delivery should come back (a booking behind what is queued and parked already)."""

    def __init__(
        self,
        channel: Channel,
        limiter: RateLimiter,
        retry: RetryConfig,
        clock: Callable[[], float],
    ) -> None:
        self._retry = retry
        self._clock = clock
        self._booked_until = 0.0  # when the lane will have sent what is queued and parked
        self.congested = False  # the process's event loop ran late at the last tick
        self.retarget(channel, limiter)

    def retarget(self, channel: Channel, limiter: RateLimiter) -> None:
        """A new rate limit or concurrency: what the lane learnt no longer applies."""
        self._channel = channel
        self._limiter = limiter
        rate = channel.rate_limit.per_second if channel.rate_limit is not None else None
        self.throughput = Throughput(rate)

    def capacity(self) -> int:
        """How many queued deliveries the lane can send within the backlog bound, at the
        better of its current and its recent rate: a lane slowed by a busy process (not by
        its receiver) should not shed work that the process would then have to read again."""
        rate = self.throughput.sustained()
        if rate is None:
            return sys.maxsize
        return max(self._channel.max_concurrency, int(self._retry.max_backlog_seconds * rate))

    def overloaded(self, queued: int, oldest_enqueued_at: float | None) -> bool:
        """More work than the lane can send within the bound. A receiver's pause or a rate
        limit makes that known up front; otherwise only a lane already behind counts, so a
        healthy lane absorbing a burst (or still warming up its connections) parks nothing."""
        bound = self._retry.max_backlog_seconds
        if self._limiter.free_in() > bound:
            return True
        if queued < self.capacity():
            return False
        if self._channel.rate_limit is not None:
            return True
        behind = oldest_enqueued_at is not None and self._clock() - oldest_enqueued_at > bound
        return behind and not self.congested

    def park_for(self, queued: int, parks: int) -> float:
        """Seconds until a delivery parked now should come back: booked a place behind what is
        queued and parked already, returning while half a backlog is still ahead of it."""
        rate = self.throughput.pacing(fallback=float(self._channel.max_concurrency))
        rate = min(rate, self._limiter.share() or rate)  # a fleet-wide limit is shared
        now = self._clock()
        ready = now + max(queued / rate, self._limiter.free_in())
        slot = max(self._booked_until, ready)
        self._booked_until = slot + 1 / rate
        wait = slot - now - self._retry.max_backlog_seconds / 2
        # Only the shortest park grows with each park: the booking already says when there is
        # room, and stretching it would bring the delivery back long after the lane ran dry.
        shortest = _MIN_PARK_SECONDS * _PARK_GROWTH**parks
        return max(wait, shortest)

    def tick(self, elapsed: float, saturated: bool, congested: bool) -> None:
        """One watch tick: learn the throughput unless the tick says nothing about the
        receiver (the process ran late, or the receiver paused us)."""
        self.congested = congested
        if congested or self._limiter.paused_for() > 0:
            self.throughput.skip()
        else:
            self.throughput.tick(elapsed, saturated)
