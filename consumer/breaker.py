"""Per-channel circuit breaker: stop sending to a receiver that keeps failing, probe later.

While open, deliveries wait on the delay path for the next probe without using a round of
their schedule: an outage shorter than the schedule costs no dead letter. Each failed probe
doubles the cool-down (up to a cap), so a long outage costs few probes and few rewrites.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol


class State(StrEnum):
    CLOSED = "closed"  # sending normally
    OPEN = "open"  # not sending; deliveries wait on the delay path for the next probe
    HALF_OPEN = "half_open"  # one probe request is out; its result decides


@dataclass(frozen=True, slots=True, eq=False)
class Admission:
    """What `confirm` gives a request right before it goes out; its result is recorded with
    it, so only the probe's own result settles a half-open circuit."""

    probe: bool


REGULAR: Final = Admission(probe=False)


class Breaker(Protocol):
    """What a lane needs of a breaker; the fleet-wide one keeps its state in Redis."""

    @property
    def state(self) -> State: ...

    def blocked_for(self) -> float | None:
        """Seconds until the next probe while open; None when a request may be tried."""

    async def admit(self) -> bool:
        """May this request go out now? In half-open, waits for the probe's result first."""

    async def confirm(self) -> Admission | None:
        """Right before the request, after its waits for a permit and a lease: its admission, or
        None when it may not go after all (the circuit opened meanwhile, or another request
        is the probe)."""

    def record(self, failure: bool, admission: Admission | None = None) -> None:
        """The result of a request; `admission`: what `confirm` gave it (None: not known, as
        for the probe's)."""

    async def reset(self) -> None:
        """Closed, no failures, the base cool-down (for the whole fleet where the circuit is
        shared): an operator says the receiver is back."""


class CircuitBreaker:
    def __init__(
        self,
        failures: int,
        cooldown_seconds: float,
        max_cooldown_seconds: float | None = None,
        *,
        probe_timeout: float = 30.0,
        on_change: Callable[[State, int, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._base_cooldown = cooldown_seconds
        self._max_cooldown = max(cooldown_seconds, max_cooldown_seconds or cooldown_seconds)
        self._cooldown = cooldown_seconds
        self._probe_timeout = probe_timeout  # how long others wait on a probe's result
        self._on_change = on_change
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._settled: asyncio.Event | None = None  # set when the probe's result is in
        self.awaiting_probe = 0  # callers waiting for the probe's result
        self._probe: Admission | None = None  # the admission of the half-open circuit's probe
        self.state = State.CLOSED

    @property
    def cooldown(self) -> float:
        return self._cooldown

    def blocked_for(self) -> float | None:
        if self.state is not State.OPEN:
            return None
        left = self._opened_at + self._cooldown - self._clock()
        return left if left > 0 else None

    async def admit(self) -> bool:
        while self.state is State.HALF_OPEN:
            settled = self._settled
            if settled is None:
                break
            self.awaiting_probe += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(settled.wait(), self._probe_timeout)
            finally:
                self.awaiting_probe -= 1
            if not settled.is_set():
                return False  # the probe never reported back: treat the channel as down
        if self.state is State.CLOSED:
            return True
        if self.blocked_for() is not None:
            return False
        self._settled = asyncio.Event()
        self._move(State.HALF_OPEN)  # this caller is the probe
        return True

    async def confirm(self) -> Admission | None:
        if self.state is State.CLOSED:
            return REGULAR
        if self.state is State.HALF_OPEN and self._probe is None:
            self._probe = Admission(probe=True)  # the one request of the half-open circuit
            return self._probe
        return None

    def record(self, failure: bool, admission: Admission | None = None) -> None:
        """Permanent failures (4xx) and throttling (429) are not failures here: the receiver
        answered, so it is up."""
        if self.state is State.HALF_OPEN and admission is not None and admission is not self._probe:
            return  # a request sent before the circuit opened: the probe decides
        if not failure:
            self._failures = 0
            self._cooldown = self._base_cooldown
            if self.state is not State.CLOSED:
                self._move(State.CLOSED)
            return
        self._failures += 1
        if self.state is State.HALF_OPEN:
            self._cooldown = min(self._cooldown * 2, self._max_cooldown)
        if self.state is State.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock()
            if self.state is not State.OPEN:
                self._move(State.OPEN)

    def seed(self, state: State, failures: int, cooldown: float, open_for: float) -> None:
        """Start from what the fleet knew (the shared circuit, before Redis stopped
        answering), not from a blank closed circuit. A probe out elsewhere counts as open and
        due: this process may probe once itself."""
        self._failures = failures
        self._cooldown = min(max(cooldown, self._base_cooldown), self._max_cooldown)
        if state is State.CLOSED:
            if self.state is not State.CLOSED:
                self._move(State.CLOSED)
            return
        self._opened_at = self._clock() - self._cooldown + open_for
        if self.state is not State.OPEN:
            self._move(State.OPEN)

    async def reset(self) -> None:
        self._failures = 0
        self._cooldown = self._base_cooldown
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)  # a probe under way is released too

    def _move(self, state: State) -> None:
        was_probing = self.state is State.HALF_OPEN
        self._probe = None
        self.state = state
        if was_probing and self._settled is not None:
            self._settled.set()
            self._settled = None
        if self._on_change is not None:
            self._on_change(state, self._failures, self._cooldown)
