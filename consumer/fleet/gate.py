"""A channel's concurrency cap for the whole fleet, as the lane's `ConcurrencyGate`.

Round trips are kept low by holding on to a lease: a request that ends within `HOLD` of the
lease being taken leaves it with this replica for `LINGER`, and the next request takes it
without asking Redis. Idle, it goes back at once when Redis said other replicas wait for
leases; passed from a finished request to a waiting one, it serves until `HOLD`, after which
a lease always goes back, so the other replicas get their turn. When the cap is reached, one
waiter per channel and replica waits: for a lease of its own replica that comes back within
its hold, or else in Redis until a lease is given back anywhere (each give-back wakes one
waiter of the fleet; `WAIT` bounds it, so an expired lease of a crashed replica is noticed
too); the others queue behind it in order.

While the shared store does not answer, a local gate at this replica's share of the cap
(`max(1, cap // replicas)`) stands in. Nothing of an outage outlives it: a lease whose take or
give-back got no answer may or may not hold a place in Redis, so it is remembered and freed
once Redis answers again, and the requests the fallback let out that still run are counted
in Redis then, so the replicas that are back do not fill the cap beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from consumer.concurrency import Lease, LocalGate

from .leases import LeaseStore
from .shared import Availability, FleetUnavailable

HOLD: Final = 1.0  # seconds a lease may serve consecutive requests of one replica
LINGER: Final = 0.2  # seconds an unused lease waits for this replica's next request
_WANTED_FOR: Final = 1.0  # after hearing others wait, this long no lease is kept idle
WAIT: Final = 1.0  # seconds a waiter blocks for a give-back before trying again anyway


@dataclass(slots=True)
class _Held:
    holder: str
    taken_at: float
    timer: asyncio.TimerHandle | None = field(default=None)


class _FleetLease:
    __slots__ = ("_gate", "_held")

    def __init__(self, gate: FleetGate, held: _Held) -> None:
        self._gate: FleetGate | None = gate
        self._held = held

    def release(self) -> None:
        if self._gate is not None:
            gate, self._gate = self._gate, None
            gate._returned_lease(self._held)


class _FallbackLease:
    """A lease of the fallback's local gate, named so it can be counted in Redis once Redis
    is back while its request still runs."""

    __slots__ = ("_gate", "_holder", "_local")

    def __init__(self, gate: FleetGate, local: Lease, holder: str) -> None:
        self._gate: FleetGate | None = gate
        self._local = local
        self._holder = holder

    def release(self) -> None:
        if self._gate is not None:
            gate, self._gate = self._gate, None
            self._local.release()
            gate._fallback_returned(self._holder)


class FleetGate:
    def __init__(
        self,
        store: LeaseStore,
        availability: Availability,
        limit: int,
        *,
        holder: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._availability = availability
        self._limit = limit
        self._holders = (f"{holder}:{n}" for n in itertools.count())
        self._clock = clock
        self._idle: list[_Held] = []  # leases this replica holds with no request on them
        self._out: list[_Held] = []  # leases this replica's requests hold
        self._returned = asyncio.Event()  # a lease became idle
        self._turn = asyncio.Lock()  # the one waiter that asks Redis
        self._blocked = False  # that waiter is waiting for a give-back
        self._wanted_until = -math.inf  # other replicas wait for leases until then
        self._fallback: LocalGate | None = None
        self._uncertain: set[str] = set()  # holders whose place in Redis nobody knows
        self._running: dict[str, bool] = {}  # fallback leases out -> counted in Redis
        self._settler: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def acquire(self) -> Lease:
        if self._availability.shared:
            if not self._turn.locked() and not self._unsettled() and (lease := self._reuse()):
                return lease  # nobody here waits longer for one: no overtaking
            async with self._turn:
                lease = await self._from_store()
            if lease is not None:
                return lease
        local = await self._local().acquire()
        holder = next(self._holders)
        self._running[holder] = False  # counted in Redis once it answers, if still running
        self._settle_later()
        return _FallbackLease(self, local, holder)

    async def _from_store(self) -> Lease | None:
        """A lease, or None when the store stopped answering (the caller falls back)."""
        while self._availability.shared:
            if self._unsettled() and not await self._settle():
                return None
            if (lease := self._reuse()) is not None:
                return lease
            holder = next(self._holders)
            try:
                try:
                    granted, wanted = await self._store.take(holder)
                except BaseException:
                    # Timed out or cancelled: the script may have run. Free it once heard.
                    self._uncertain.add(holder)
                    raise
                self._heard(wanted)
                if granted:
                    return self._lent(_Held(holder, self._clock()))
                self._returned.clear()
                if self._idle:
                    continue  # one came back during the round trip
                if self._coming_back():
                    # A lease of ours is out and comes back to us within its hold.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._returned.wait(), WAIT)
                    continue
                self._blocked = True
                try:
                    await self._store.freed(WAIT)
                finally:
                    self._blocked = False
            except FleetUnavailable:
                return None
        return None

    def _coming_back(self) -> bool:
        now = self._clock()
        return any(now - held.taken_at < HOLD for held in self._out)

    def _lent(self, held: _Held) -> Lease:
        self._out.append(held)
        return _FleetLease(self, held)

    def _reuse(self) -> Lease | None:
        while self._idle:
            held = self._idle.pop()  # the newest: it has the most of its hold left
            if held.timer is not None:
                held.timer.cancel()
                held.timer = None
            if self._clock() - held.taken_at < HOLD:
                return self._lent(held)
            self._give_back(held)
        return None

    def _returned_lease(self, held: _Held) -> None:
        self._out.remove(held)
        left = HOLD - (self._clock() - held.taken_at)
        waiting_here = self._turn.locked() and not self._blocked
        wanted = self._clock() < self._wanted_until
        if left <= 0 or self._blocked or not self._availability.shared:
            # Its hold is over, or this replica's waiter waits in Redis: the fleet's turn.
            self._give_back(held)
            return
        if wanted and not waiting_here:
            self._give_back(held)  # kept idle, it would keep another replica waiting
            return
        # Kept for this replica's next request: the one waiting now, or one within LINGER.
        loop = asyncio.get_running_loop()
        held.timer = loop.call_later(min(LINGER, left), self._unused, held)
        self._idle.append(held)
        self._returned.set()

    def _heard(self, wanted: bool) -> None:
        if wanted:
            self._wanted_until = self._clock() + _WANTED_FOR

    def _unused(self, held: _Held) -> None:
        with contextlib.suppress(ValueError):  # taken again meanwhile
            self._idle.remove(held)
            self._give_back(held)

    def _give_back(self, held: _Held) -> None:
        self._give_back_holder(held.holder)

    async def _send_back(self, holder: str) -> None:
        try:
            self._heard(await self._store.give_back(holder))
        except FleetUnavailable:
            self._uncertain.add(holder)  # freed once Redis answers, not at its expiry
            self._settle_later()

    def _fallback_returned(self, holder: str) -> None:
        if self._running.pop(holder, False):
            self._give_back_holder(holder)  # counted in Redis after the outage: free it

    def _give_back_holder(self, holder: str) -> None:
        task = asyncio.create_task(self._send_back(holder))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _unsettled(self) -> bool:
        return bool(self._uncertain) or not all(self._running.values())

    async def _settle(self) -> bool:
        """Tell Redis what the outage left: free the uncertain places, count the requests
        still running on the fallback. False when Redis did not answer."""
        dropped = sorted(self._uncertain)
        running = [holder for holder, counted in self._running.items() if not counted]
        try:
            self._heard(await self._store.settle(dropped, running))
        except FleetUnavailable:
            return False
        self._uncertain.difference_update(dropped)
        for holder in running:
            if holder in self._running:
                self._running[holder] = True
            else:  # it ended during the round trip: its place goes again
                self._uncertain.add(holder)
        return True

    def _settle_later(self) -> None:
        """Settle as soon as the shared store answers, even if no request comes: a lease
        left over would hold a place of the fleet's cap until its expiry."""
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_when_shared())

    async def _settle_when_shared(self) -> None:
        while self._unsettled():
            await self._availability.until_shared()
            async with self._turn:
                if self._unsettled() and not await self._settle():
                    continue  # down again: wait for the next recovery

    def _local(self) -> LocalGate:
        share = max(1, self._limit // self._availability.replicas())
        if self._fallback is None:
            self._fallback = LocalGate(share)
        elif self._fallback.limit != share:
            self._fallback.resize(share)
        return self._fallback

    async def close(self) -> None:
        for held in self._idle:
            if held.timer is not None:
                held.timer.cancel()
            self._give_back(held)
        self._idle.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._settler is not None:
            self._settler.cancel()
            await asyncio.gather(self._settler, return_exceptions=True)
        if self._uncertain and self._availability.shared:
            with contextlib.suppress(FleetUnavailable):  # else they expire by themselves
                await self._store.settle(sorted(self._uncertain), ())
