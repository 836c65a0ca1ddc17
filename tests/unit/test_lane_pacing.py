"""What a lane checks at the moment of sending, after waiting for a lease of the fleet's
concurrency cap: the rate (a permit gone stale meanwhile is taken again), a pause a receiver
asked for meanwhile, and a circuit that opened meanwhile. On a clock the test moves."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from consumer.breaker import CircuitBreaker, State
from consumer.catalog import Channel
from consumer.concurrency import Lease
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayPath, MemoryDelaySink, delay_levels
from consumer.delivery import Delivery
from consumer.lanes import ChannelLane
from consumer.outcome import Outcome, from_response
from consumer.ratelimit import LocalLimiter

from .conftest import CatalogFactory, ChannelFactory, WaitUntil
from .fakes import FakeOwner
from .test_lanes import BREAKER, make_delivery

RATE = 10.0  # per second, burst 1: one permit every 0.1 s


class Clock:
    """Time that moves only when a limiter sleeps (to the end of that sleep) or the test
    moves it: every send time below is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, until)


class HeldGate:
    """A fleet's cap that is reached: every request waits for a lease until the test opens
    it, as when a stalled receiver answers all its requests at once."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0
        self.out = 0
        self.taken = 0

    async def acquire(self) -> Lease:
        self.waiting += 1
        await self.opened.wait()
        self.waiting -= 1
        self.out += 1
        self.taken += 1
        return _Lease(self)


@dataclass
class _Lease:
    gate: HeldGate
    released: bool = field(default=False)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.out -= 1


class TimedTransport:
    def __init__(self, clock: Clock, gate: HeldGate) -> None:
        self.clock = clock
        self.gate = gate
        self.sent: list[float] = []
        self.leases_out: list[int] = []

    async def send(self, delivery: Delivery) -> Outcome:
        self.sent.append(self.clock())
        self.leases_out.append(self.gate.out)
        return from_response(200, None, "ok")


@dataclass
class Harness:
    lane: ChannelLane
    clock: Clock
    gate: HeldGate
    limiter: LocalLimiter
    breaker: CircuitBreaker
    transport: TimedTransport
    delayed: MemoryDelaySink


@pytest.fixture
def channel(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Channel:
    _, catalog = build_catalog([channel_cfg("coupon-system", max_concurrency=3)])
    return catalog.channels["coupon-system"]


@asynccontextmanager
async def paced_lane(channel: Channel) -> AsyncIterator[Harness]:
    clock, gate = Clock(), HeldGate()
    limiter = LocalLimiter(RATE, 1, clock, clock.sleep)
    breaker = CircuitBreaker(3, 30.0, 300.0, clock=clock)
    transport = TimedTransport(clock, gate)
    delayed = MemoryDelaySink()
    delays = DelayPath(delayed, "webhook-retry", delay_levels(BREAKER))
    dead_letters = DeadLetterWriter(MemoryDeadLetterSink())
    lane = ChannelLane(
        channel,
        transport,
        dead_letters,
        delays,
        BREAKER,
        limiter=limiter,
        breaker=breaker,
        gate=gate,
        rng=random.Random(7),
        clock=clock,
    )
    lane.start()
    try:
        yield Harness(lane, clock, gate, limiter, breaker, transport, delayed)
    finally:
        await lane.close()
        await delays.close()
        await dead_letters.close()


async def test_permits_gone_stale_waiting_for_leases_are_taken_again(
    channel: Channel, wait_until: WaitUntil
) -> None:
    """Three requests take their permits, 0.1 s apart, then wait for leases while the
    receiver stalls; when it answers all at once, they go out 0.1 s apart again, not
    together on their old permits (26 in a second against 11 allowed, in a real fleet)."""
    finished = FakeOwner()
    async with paced_lane(channel) as h:
        for offset in range(3):
            h.lane.submit(make_delivery(channel, finished, offset=offset))
        await wait_until(lambda: h.gate.waiting == 3, what="all three wait for leases")
        h.clock.now += 5.0  # the stall
        h.gate.opened.set()
        await wait_until(lambda: len(finished) == 3, what="all three sent")
    gaps = [b - a for a, b in zip(h.transport.sent, h.transport.sent[1:], strict=False)]
    assert min(gaps) >= 1 / RATE - 1e-9, f"sent {gaps} s apart"


async def test_a_pause_asked_for_during_the_wait_for_a_lease_holds_the_request(
    channel: Channel, wait_until: WaitUntil
) -> None:
    """A receiver says `Retry-After: 60` (to another request, or another replica) while this
    request waits for its lease: it waits out the pause without holding the lease."""
    finished = FakeOwner()
    async with paced_lane(channel) as h:
        h.lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: h.gate.waiting == 1, what="waiting for its lease")
        paused_at = h.clock()
        h.limiter.pause(60.0)
        h.gate.opened.set()
        await wait_until(lambda: len(finished) == 1, what="sent after the pause")
    [sent] = h.transport.sent
    assert sent >= paused_at + 60.0
    assert h.gate.taken == 2  # the first lease went back for the pause, a second one sent
    assert h.transport.leases_out == [1]


async def test_a_circuit_that_opened_during_the_wait_for_a_lease_sends_nothing(
    channel: Channel, wait_until: WaitUntil
) -> None:
    """Other requests failed while this one waited for its lease, and opened the circuit:
    it is not sent, and waits on the delay path for the probe, using no round."""
    finished = FakeOwner()
    async with paced_lane(channel) as h:
        delivery = make_delivery(channel, finished)
        h.lane.submit(delivery)
        await wait_until(lambda: h.gate.waiting == 1, what="waiting for its lease")
        for _ in range(3):
            h.breaker.record(True)
        assert h.breaker.state is State.OPEN
        h.gate.opened.set()
        await wait_until(lambda: len(finished) == 1, what="handed to the delay path")
    assert h.transport.sent == []
    assert h.gate.out == 0  # its lease went back
    [(_, record)] = h.delayed.written
    assert (record.attempts, record.rounds) == (0, 0)
