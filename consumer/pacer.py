"""When a lane's next request may go out, and what each answer teaches about the receiver.

A request goes with a rate-limit permit, a concurrency lease and the circuit's word, as they
stand when it leaves. The answers pace the lane back: 5xx, timeouts and connection errors
count towards opening the circuit; 429 and Retry-After pause the whole lane instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from .breaker import REGULAR, Admission, Breaker, CircuitBreaker, State
from .channels import ChannelControl
from .concurrency import NO_LEASE, UNLIMITED, ConcurrencyGate, Lease
from .config import RetryConfig
from .outcome import GONE, Outcome
from .ratelimit import LocalLimiter, RateLimiter

# A permit this old when its lease comes is taken again: requests that waited for leases
# together would otherwise go out together, past the rate.
_PERMIT_FRESH_SECONDS = 0.05

Clearance = tuple[float, Lease, Admission]  # seconds the limiter held it, its lease, admission
# What the fast path hands out: no wait, the no-op lease, a regular (non-probe) request.
_AT_ONCE: Final[Clearance] = (0.0, NO_LEASE, REGULAR)


class Pacer:
    def __init__(
        self,
        channel: str,
        limiter: RateLimiter,
        gate: ConcurrencyGate,
        breaker: Breaker,
        control: ChannelControl,
        retry: RetryConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._control = control
        self._retry = retry
        self._clock = clock
        self._throttled = 0  # 429s in a row
        self._limiter = limiter
        self._gate = gate  # a cap beyond the lane's workers (the fleet's), else a no-op
        self._breaker = breaker
        self._local: LocalLimiter | None = None  # set when the fast path may be tried
        self._fast_path()

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    @property
    def breaker(self) -> Breaker:
        return self._breaker

    @breaker.setter
    def breaker(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._fast_path()

    def retarget(self, limiter: RateLimiter, gate: ConcurrencyGate | None = None) -> None:
        """A reloaded rate limit (and, from the same factory, its gate) for the next requests."""
        self._limiter = limiter
        if gate is not None:
            self._gate = gate
        self._fast_path()

    def _fast_path(self) -> None:
        # Only this process's own limiter and circuit, and no gate, answer without awaiting.
        limiter, self._local = self._limiter, None
        if isinstance(limiter, LocalLimiter) and isinstance(self._breaker, CircuitBreaker):
            self._local = limiter if self._gate is UNLIMITED else None

    def at_once(self) -> Clearance | None:
        """The clearance of a request that may go this instant without waiting for anything
        (the circuit closed, a permit free, no pause, no gate), with its permit taken; None
        when it must go through `cleared`, with nothing taken."""
        local = self._local
        if local is None or self._breaker.state is not State.CLOSED or not local.take_now():
            return None
        return _AT_ONCE

    async def cleared(self) -> Clearance | None:
        """A permit, a lease and the circuit's word as they stand when the request goes out:
        a pause that came during the wait for the lease is waited out without the lease; a
        permit gone stale meanwhile is taken again (holding the lease: a wait of at most
        cap / rate); an open circuit, or one that opened meanwhile, sends nothing (None)."""
        if not await self._breaker.admit():
            return None
        waited = 0.0
        while True:
            waited += await self._limiter.acquire()
            permitted = self._clock()
            lease = await self._gate.acquire()
            try:
                if self._limiter.paused_for() > 0:
                    lease.release()
                    continue
                if self._clock() - permitted > _PERMIT_FRESH_SECONDS:
                    waited += await self._limiter.acquire()
                admission = await self._breaker.confirm()
            except BaseException:
                lease.release()
                raise
            if admission is None:
                lease.release()
                return None
            return waited, lease, admission

    def learn(self, outcome: Outcome, admission: Admission | None = None) -> None:
        """What an answer says about the receiver, for every delivery of the lane."""
        throttled = outcome.status == 429
        if outcome.status == GONE:
            self._control.gone(self._channel, outcome)
        self._breaker.record(outcome.retryable and not throttled, admission)
        if throttled or outcome.retry_after is not None:
            self._throttled += throttled
            pause = outcome.retry_after
            if pause is None:  # a bare 429: back off further with each one in a row
                pause = (
                    min(
                        self._retry.backoff_max_ms,
                        self._retry.backoff_initial_ms * 2 ** (self._throttled - 1),
                    )
                    / 1000
                )
            self._limiter.pause(min(pause, self._retry.max_age))
        elif outcome.ok:
            self._throttled = 0
