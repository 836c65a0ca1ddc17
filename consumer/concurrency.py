"""Per-channel concurrency cap around each request, beyond the lane's own worker count.

A lane runs `max_concurrency` workers, which caps one process. The gate is what a lane asks
before each request when the cap must hold for more than one process (the fleet-wide gate
keeps its leases in Redis); for a single process it is a no-op.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, Protocol


class Lease(Protocol):
    def release(self) -> None:
        """The request is answered; idempotent."""


class ConcurrencyGate(Protocol):
    async def acquire(self) -> Lease:
        """Wait for a place among the channel's concurrent requests."""


class _NoLease:
    __slots__ = ()

    def release(self) -> None:
        return None


NO_LEASE: Final[Lease] = _NoLease()


class Unlimited:
    """The lane's workers are the cap: nothing to wait for."""

    async def acquire(self) -> Lease:
        return NO_LEASE


UNLIMITED = Unlimited()


class LocalGate:
    """At most `limit` leases out at once in this process; waiters are served in order.

    Unlike a semaphore, the limit may change while leases are out (the share of a fleet cap
    follows the number of live replicas): a lower limit takes effect as leases come back.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> Lease:
        if self.held >= self.limit or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # granted just as it was cancelled: pass it on
                else:
                    self._waiters.remove(waiter)
                raise
        else:
            self.held += 1
        return _LocalLease(self)

    @property
    def waiting(self) -> int:
        """Callers queued for a lease (what a test waits on instead of counting loop turns)."""
        return len(self._waiters)

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _release(self) -> None:
        self.held -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.held < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1  # counted for the waiter before it runs: no one can overtake
                waiter.set_result(None)


class _LocalLease:
    __slots__ = ("_gate",)

    def __init__(self, gate: LocalGate) -> None:
        self._gate: LocalGate | None = gate

    def release(self) -> None:
        if self._gate is not None:
            gate, self._gate = self._gate, None
            gate._release()
