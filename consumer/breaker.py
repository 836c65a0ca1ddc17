"""Per-channel circuit breaker: stop sending to a receiver that keeps failing, probe later."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

import structlog

log = structlog.get_logger(__name__)


class State(StrEnum):
    CLOSED = "closed"  # sending normally
    OPEN = "open"  # not sending; deliveries go straight to the delay path
    HALF_OPEN = "half_open"  # one probe request is out; its result decides


class CircuitBreaker:
    def __init__(
        self,
        channel: str,
        failures: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._threshold = failures
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self.state = State.CLOSED

    def is_open(self) -> bool:
        """Would a request be refused now? Unlike `allow`, never takes the half-open probe."""
        if self.state is State.OPEN:
            return self._clock() - self._opened_at < self._cooldown
        return self.state is State.HALF_OPEN

    def allow(self) -> bool:
        """May a request go out now? In half-open, exactly one caller gets True."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and self._clock() - self._opened_at >= self._cooldown:
            self._move(State.HALF_OPEN)
            return True
        return False

    def record(self, success: bool) -> None:
        """The result of a request that `allow` let through (permanent failures count as
        successes: the receiver answered, so it is up)."""
        if success:
            self._failures = 0
            if self.state is not State.CLOSED:
                self._move(State.CLOSED)
            return
        self._failures += 1
        if self.state is State.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock()
            if self.state is not State.OPEN:
                self._move(State.OPEN)

    def _move(self, state: State) -> None:
        log.warning("circuit." + state.value, channel=self._channel, failures=self._failures)
        self.state = state
