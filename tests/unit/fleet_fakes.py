"""In-memory stand-ins for the fleet-wide limits: the shared stores behind their Protocols
(the same rules as the Lua scripts, on a clock the test controls), an availability switch,
and virtual time for the limiter's sleeps."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumer.breaker import State
from consumer.fleet.circuit import Circuit
from consumer.fleet.permits import Grant
from consumer.fleet.shared import FleetUnavailable


class Switch:
    """`Availability`: whether the shared store answers (a test flips it), and the live
    replica count."""

    def __init__(self, shared: bool = True, count: int = 1) -> None:
        self.count = count
        self._up = asyncio.Event()
        self.shared = shared

    @property
    def shared(self) -> bool:
        return self._up.is_set()

    @shared.setter
    def shared(self, value: bool) -> None:
        if value:
            self._up.set()
        else:
            self._up.clear()

    def replicas(self) -> int:
        return self.count

    async def until_shared(self) -> None:
        await self._up.wait()


class VirtualTime:
    """A clock and a sleep where time moves only when every task of `run` is asleep, to the
    earliest wake-up: many limiters over many virtual seconds in milliseconds."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waker = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), waker))
        await waker

    async def run(self, *coroutines: Coroutine[Any, Any, Any]) -> list[Any]:
        tasks = [asyncio.ensure_future(c) for c in coroutines]
        while not all(task.done() for task in tasks):
            for _ in range(50):  # let every task that can run, run
                await asyncio.sleep(0)
            if all(task.done() for task in tasks):
                break
            if not self._sleepers:
                raise RuntimeError("every task waits and none sleeps: a deadlock")
            wake_at, _, waker = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake_at)
            if not waker.done():
                waker.set_result(None)
        return [task.result() for task in tasks]


class _Shared:
    def __init__(self, switch: Switch) -> None:
        self.switch = switch
        self.calls = 0

    def _call(self) -> None:
        """A round trip: refused (and the switch flipped, as the link does) while down."""
        self.calls += 1
        if not self.switch.shared:
            raise FleetUnavailable("down")


class MemoryPermits(_Shared):
    """`PermitSource`: the GCRA of the grant script, one instance shared by every replica."""

    def __init__(self, per_second: float, burst: int, clock: Any, switch: Switch) -> None:
        super().__init__(switch)
        self._interval = 1 / per_second
        self._tolerance = self._interval * (burst - 1)
        self._span = max(self._interval, 0.2)
        self._clock = clock
        self._tat = -math.inf
        self.paused_until = -math.inf
        self.asked: list[int] = []
        self.pauses: list[float] = []

    async def grant(self, count: int, resume: bool = False) -> Grant:
        self._call()
        self.asked.append(count)
        now = self._clock()
        if resume:
            self._tat = max(self._tat, now + self._tolerance)
        slots: list[float] = []
        for _ in range(max(1, count)):
            slot = max(now, self._tat - self._tolerance, self.paused_until)
            # The script counts whole microseconds; floats here must not cut a batch short.
            if slots and slot - (now + slots[0]) > self._span + 1e-9:
                break
            self._tat = max(self._tat, slot) + self._interval
            slots.append(slot - now)
        free = max(0.0, self._tat - self._tolerance - now)
        return Grant(tuple(slots), free, max(0.0, self.paused_until - now), now)

    async def pause(self, seconds: float) -> None:
        self._call()
        self.pauses.append(seconds)
        self.paused_until = max(self.paused_until, self._clock() + seconds)


class MemoryLeases(_Shared):
    """`LeaseStore`: the lease script's cap and expiry."""

    def __init__(self, limit: int, ttl: float, clock: Any, switch: Switch) -> None:
        super().__init__(switch)
        self._limit = limit
        self._ttl = ttl
        self._clock = clock
        self.held: dict[str, float] = {}  # holder -> expiry
        self.most = 0
        self.taken = 0
        self._tokens: asyncio.Queue[None] = asyncio.Queue(maxsize=limit)
        self.wanted_until = -math.inf

    async def take(self, holder: str) -> tuple[bool, bool]:
        self._call()
        now = self._clock()
        self.held = {h: expiry for h, expiry in self.held.items() if expiry > now}
        if len(self.held) >= self._limit:
            self.wanted_until = now + 1
            return False, True
        self.held[holder] = now + self._ttl
        self.taken += 1
        self.most = max(self.most, len(self.held))
        return True, now < self.wanted_until

    async def give_back(self, holder: str) -> bool:
        self._call()
        if self.held.pop(holder, None) is not None and not self._tokens.full():
            self._tokens.put_nowait(None)  # wakes one waiter, as RPUSH does one BLPOP
        return self._clock() < self.wanted_until

    async def freed(self, within: float) -> bool:
        self._call()
        try:
            await asyncio.wait_for(self._tokens.get(), within)
        except TimeoutError:
            return False
        return True

    async def settle(self, dropped: Sequence[str], running: Sequence[str]) -> bool:
        self._call()
        now = self._clock()
        for holder in dropped:
            if self.held.pop(holder, None) is not None and not self._tokens.full():
                self._tokens.put_nowait(None)
        for holder in running:
            self.held[holder] = now + self._ttl
        self.most = max(self.most, len(self.held))
        return now < self.wanted_until


@dataclass
class MemoryCircuit(_Shared):
    """`CircuitStore`: the circuit scripts' rules."""

    switch: Switch
    threshold: int
    base: float
    most: float
    probe_timeout: float
    clock: Any
    state: State = State.CLOSED
    failures: int = 0
    cooldown: float = 0.0
    open_until: float = 0.0
    version: int = 0
    probe_holder: str | None = None
    probe_until: float = -math.inf
    claims: int = field(default=0)

    def __post_init__(self) -> None:
        super().__init__(self.switch)
        self.cooldown = self.base

    def _probing(self) -> bool:
        return self.probe_holder is not None and self.probe_until > self.clock()

    def _reply(self) -> Circuit:
        now = self.clock()
        return Circuit(
            self.state,
            self.failures,
            self.cooldown,
            max(0.0, self.open_until - now),
            self._probing(),
            self.version,
        )

    def _reopen(self) -> None:
        self.cooldown = min(self.cooldown * 2, self.most)
        self.state, self.open_until = State.OPEN, self.clock() + self.cooldown

    def _settles(self, probe: str | None) -> bool:
        if probe and self._probing() and self.probe_holder == probe:
            self.probe_holder = None
            return self.state is State.HALF_OPEN
        return False

    async def read(self) -> Circuit:
        self._call()
        return self._reply()

    async def failed(self, probe: str | None) -> Circuit:
        self._call()
        now = self.clock()
        self.failures += 1
        if self._settles(probe):
            self._reopen()
        elif self.state is State.OPEN:
            self.open_until = now + self.cooldown
        elif self.state is State.CLOSED and self.failures >= self.threshold:
            self.state, self.open_until = State.OPEN, now + self.cooldown
        self.version += 1
        return self._reply()

    async def succeeded(self, probe: str | None) -> Circuit:
        self._call()
        if self._settles(probe) or (self.state is State.CLOSED and self.failures):
            self.state, self.failures, self.cooldown = State.CLOSED, 0, self.base
            self.open_until = 0.0
            self.version += 1
        return self._reply()

    async def claim_probe(self, holder: str) -> tuple[bool, Circuit]:
        self._call()
        now = self.clock()
        if self.state is State.HALF_OPEN and not self._probing():
            self._reopen()  # its probe went without a word: a failed probe
            self.version += 1
        elif self.state is State.OPEN and now >= self.open_until and not self._probing():
            self.probe_holder, self.probe_until = holder, now + self.probe_timeout
            self.state = State.HALF_OPEN
            self.version += 1
            self.claims += 1
            return True, self._reply()
        return False, self._reply()

    async def reset(self) -> Circuit:
        self._call()
        self.probe_holder = None
        self.state, self.failures, self.cooldown, self.open_until = State.CLOSED, 0, self.base, 0
        self.version += 1
        return self._reply()
