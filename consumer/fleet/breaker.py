"""A channel's circuit breaker for the whole fleet, as the lane's `Breaker`.

The failures in a row, the open and half-open states and the probe live in a shared
`CircuitStore`, so the circuit opens for every replica after `failures` failures in total,
and after the cool-down exactly one replica probes. The lane's questions (`blocked_for`, and
`admit` while closed) are answered from a local copy refreshed every half second while the
lane is busy, and by the answer to every failure it reports: a healthy channel pays no round
trip per request. `record` writes in the background; the probe's own result changes the local
copy at once, so this replica's transition is never late.

One probe per cool-down, whatever the waits: `admit` lets one request of this replica through
an open circuit whose cool-down is over, and the claim is taken in Redis by `confirm`, right
before that request goes out (not before its wait for a permit and a lease, which could
outlast the claim). The admission `confirm` gives names the probe, so only the probe's own result
settles the circuit, and only while its claim holds.

While the shared store does not answer, the plain local `CircuitBreaker` stands in, seeded
with the last shared state; once the store answers again, it is read before the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

from consumer.breaker import REGULAR, Admission, CircuitBreaker, State

from .circuit import Circuit, CircuitStore
from .shared import Availability, FleetUnavailable

REFRESH: Final = 0.5  # seconds between reads of the shared state while the lane is busy
# A copy older than this (an idle lane's, or one never read) is read again before a request.
_STALE_COPY: Final = 2 * REFRESH
_IDLE_AFTER: Final = 5.0  # a closed circuit nobody asked about this long is not refreshed

OnChange = Callable[[State, int, float], None]


class FleetBreaker:
    def __init__(
        self,
        store: CircuitStore,
        availability: Availability,
        fallback: CircuitBreaker,
        *,
        cooldown_seconds: float,
        max_cooldown_seconds: float,
        probe_timeout: float,
        holder: str = "replica",
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._availability = availability
        self._fallback = fallback
        self._base = cooldown_seconds
        self._max = max(cooldown_seconds, max_cooldown_seconds)
        self._probe_timeout = probe_timeout
        self._holders = (f"{holder}:{n}" for n in itertools.count())
        self._on_change = on_change
        self._clock = clock
        self._circuit = Circuit(State.CLOSED, 0, cooldown_seconds, 0.0, False, -1)
        self._open_until = -math.inf  # our clock
        self._candidate_until = -math.inf  # a request of ours, admitted to probe, until then
        self._probe: tuple[Admission, str] | None = None  # the probe out, and its claim's holder
        self._probing_until = -math.inf  # this replica's probe is out until then
        self._changed = asyncio.Event()  # set at every change of state
        self._claiming = asyncio.Lock()
        self._last_asked = -math.inf
        self._read_at = -math.inf  # when Redis last told the copy
        self._was_shared = True
        self._stale = False  # back from the fallback: the copy predates the outage
        self._refresher: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[None] | None = None  # a read of the store on its way
        self._tasks: set[asyncio.Task[None]] = set()
        self._reporting: set[asyncio.Task[None]] = set()  # failures on their way to Redis

    @property
    def state(self) -> State:
        return self._circuit.state if self._shared() and not self._stale else self._fallback.state

    def blocked_for(self) -> float | None:
        if not self._shared() or self._stale:
            return self._fallback.blocked_for()
        self._asked()
        if self._circuit.state is not State.OPEN:
            return None
        left = self._open_until - self._clock()
        return left if left > 0 else None

    async def admit(self) -> bool:
        if self._shared() and (self._stale or self._clock() - self._read_at > _STALE_COPY):
            # Back from an outage, idle for a while, or never read: what the fleet decided
            # meanwhile, before anything goes.
            await self.refresh()
        if not self._shared() or self._stale:
            return await self._fallback.admit()
        self._asked()
        await self._reported()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._probe_timeout  # waiting is real time, like the local one
        while self._shared():
            circuit = self._circuit
            if circuit.state is State.CLOSED:
                return True
            if circuit.state is State.OPEN and self.blocked_for() is not None:
                return False
            if not circuit.probing and not self._probe_pending():
                # This replica's candidate: it claims the probe in `confirm`.
                self._candidate_until = self._clock() + self._probe_timeout
                return True
            # A probe is out, here or elsewhere: wait for its result, as the local one does.
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, REFRESH))
        return await self._fallback.admit()

    async def confirm(self) -> Admission | None:
        if not self._shared() or self._stale:
            return await self._fallback.confirm()
        await self._reported()  # a failure of this replica's since admission counts too
        circuit = self._circuit
        if circuit.state is State.CLOSED:
            return REGULAR
        if circuit.state is State.OPEN and self.blocked_for() is not None:
            return None
        async with self._claiming:
            self._candidate_until = -math.inf
            if self._probing() or self._closed():
                # A probe of ours is out already, or the circuit closed meanwhile.
                return REGULAR if self._closed() else None
            holder = next(self._holders)
            try:
                claimed, circuit = await self._store.claim_probe(holder)
            except FleetUnavailable:
                return await self._fallback.confirm()
            self._learn(circuit)
            if not claimed:
                return REGULAR if self._closed() else None
            admission = Admission(probe=True)
            self._probe = (admission, holder)
            self._probing_until = self._clock() + self._probe_timeout
            return admission

    def record(self, failure: bool, admission: Admission | None = None) -> None:
        if not self._shared():
            self._fallback.record(failure, None if self._probe_of(admission) else admission)
            return
        circuit = self._circuit
        if (holder := self._probe_of(admission)) is not None:
            # The probe's answer: this replica knows the transition first and says it now.
            self._probe, self._probing_until = None, -math.inf
            if failure:
                cooldown = min(circuit.cooldown * 2, self._max)
                guess = Circuit(State.OPEN, circuit.failures + 1, cooldown, cooldown, False, 0)
            else:
                guess = Circuit(State.CLOSED, 0, self._base, 0.0, False, 0)
            self._adopt(guess, circuit.version + 1)
            self._write(self._store.failed(holder) if failure else self._store.succeeded(holder))
        elif failure:
            task = self._write(self._store.failed(None))  # its answer refreshes the copy
            self._reporting.add(task)
            task.add_done_callback(self._reporting.discard)
        elif circuit.state is State.CLOSED and circuit.failures:
            self._adopt(Circuit(State.CLOSED, 0, self._base, 0.0, False, 0), circuit.version + 1)
            self._write(self._store.succeeded(None))

    async def reset(self) -> None:
        """Close the circuit for the whole fleet now (the other replicas read it within a
        refresh); the stand-in is closed too."""
        await self._fallback.reset()
        self._probe, self._probing_until = None, -math.inf
        if self._shared():
            with contextlib.suppress(FleetUnavailable):
                self._learn(await self._store.reset())

    async def _reported(self) -> None:
        """After a failure here, learn the fleet's count before sending again (bounded by
        the round trip's timeout): the circuit opens after `failures` in total, not
        `failures` plus what each replica sent while its write was on its way."""
        if self._reporting:
            await asyncio.wait(set(self._reporting))

    def _probe_of(self, admission: Admission | None) -> str | None:
        """The claim's holder when `admission` is this replica's probe out now."""
        if admission is None or self._probe is None or self._probe[0] is not admission:
            return None
        return self._probe[1]

    def _closed(self) -> bool:
        return self._circuit.state is State.CLOSED

    def _probing(self) -> bool:
        return self._clock() < self._probing_until

    def _probe_pending(self) -> bool:
        return self._probing() or self._clock() < self._candidate_until

    def _write(self, change: Awaitable[Circuit]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._written(change))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _written(self, change: Awaitable[Circuit]) -> None:
        with contextlib.suppress(FleetUnavailable):  # the fallback takes over meanwhile
            self._learn(await change)

    def _learn(self, circuit: Circuit) -> None:
        """The shared state as Redis answered it; an answer older than the copy is ignored."""
        self._read_at = self._clock()
        if circuit.version >= self._circuit.version:
            self._adopt(circuit, circuit.version)

    def _adopt(self, circuit: Circuit, version: int) -> None:
        # A guess made here takes the version its write will have at least, so reads that
        # were already on their way cannot undo it.
        previous = self._circuit.state
        self._circuit = Circuit(
            circuit.state,
            circuit.failures,
            circuit.cooldown,
            circuit.open_for,
            circuit.probing,
            version,
        )
        self._open_until = self._clock() + circuit.open_for
        self._stale = False
        if circuit.state is not previous:
            self._changed.set()
            if self._on_change is not None:
                self._on_change(circuit.state, circuit.failures, circuit.cooldown)

    def _shared(self) -> bool:
        shared = self._availability.shared
        if shared != self._was_shared:
            self._was_shared = shared
            if shared:
                # Back: whatever Redis says now is newer than the copy; read it before the
                # next request, and until then let the stand-in answer.
                self._stale = True
                self._probe, self._probing_until = None, -math.inf
            else:
                circuit = self._circuit
                open_for = max(0.0, self._open_until - self._clock())
                self._fallback.seed(circuit.state, circuit.failures, circuit.cooldown, open_for)
        return shared

    def _asked(self) -> None:
        self._last_asked = self._clock()
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH)
            quiet = self._clock() - self._last_asked > _IDLE_AFTER
            if quiet and self._circuit.state is State.CLOSED and not self._circuit.failures:
                return  # an idle, healthy channel costs no round trips
            await self.refresh()

    async def refresh(self) -> None:
        """Read the shared state now (the background task does every `REFRESH` seconds).
        Callers that ask while a read is on its way share it: one round trip, not one each."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        await asyncio.shield(self._reading)

    async def _read(self) -> None:
        if self._shared():
            with contextlib.suppress(FleetUnavailable):
                circuit = await self._store.read()
                if self._stale:
                    self._read_at = self._clock()
                    self._adopt(circuit, circuit.version)  # Redis may have restarted empty
                else:
                    self._learn(circuit)

    async def close(self) -> None:
        """Stop refreshing; let the writes on their way land (each bounded by a timeout)."""
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
