"""The fleet-wide concurrency cap over an in-memory lease store: replicas share one cap, a
lease serves several requests of one replica, without the store each takes its share, and
nothing an outage leaves behind outlives it (no leaked place, no uncounted request)."""

from __future__ import annotations

import asyncio
import time

import pytest

from consumer.concurrency import Lease
from consumer.fleet import gate as gate_module
from consumer.fleet.gate import HOLD, FleetGate
from consumer.fleet.shared import FleetUnavailable

from .conftest import WaitUntil
from .fleet_fakes import MemoryLeases, Switch

TTL = 30.0  # seconds a lease lives in the store unless given back: far beyond every test


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def gates(n: int, limit: int, switch: Switch, clock: Clock) -> tuple[MemoryLeases, list[FleetGate]]:
    leases = MemoryLeases(limit, ttl=TTL, clock=clock, switch=switch)
    return leases, [FleetGate(leases, switch, limit, holder=f"r{i}", clock=clock) for i in range(n)]


async def test_replicas_share_one_cap() -> None:
    switch, clock = Switch(count=3), Clock()
    leases, replicas = gates(3, limit=4, switch=switch, clock=clock)
    running = most = done = 0

    async def request(gate: FleetGate) -> None:
        nonlocal running, most, done
        lease = await gate.acquire()
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)  # the request being answered
        running -= 1
        lease.release()
        done += 1

    await asyncio.wait_for(
        asyncio.gather(*(request(g) for g in replicas for _ in range(8))), timeout=30
    )
    assert done == 24
    assert most == 4  # reached, never passed
    assert leases.most <= 4
    for gate in replicas:
        await gate.close()
    assert leases.held == {}


async def test_a_returned_lease_serves_the_next_request_without_a_round_trip() -> None:
    switch, clock = Switch(), Clock()
    leases, [gate] = gates(1, limit=2, switch=switch, clock=clock)
    for _ in range(10):
        (await gate.acquire()).release()
    assert leases.taken == 1
    assert leases.calls == 1
    await gate.close()
    assert leases.held == {}


async def test_a_lease_goes_back_after_its_hold() -> None:
    switch, clock = Switch(), Clock()
    leases, [gate] = gates(1, limit=2, switch=switch, clock=clock)
    lease = await gate.acquire()
    clock.offset += HOLD  # a long request
    lease.release()
    await gate.close()  # waits for the give-back on its way
    assert leases.held == {}
    (await gate.acquire()).release()
    assert leases.taken == 2


async def test_an_unused_lease_goes_back_soon(wait_until: WaitUntil) -> None:
    switch, clock = Switch(), Clock()
    leases, [gate] = gates(1, limit=1, switch=switch, clock=clock)
    (await gate.acquire()).release()
    assert leases.held  # kept a moment for this replica's next request
    await wait_until(lambda: not leases.held, within=5, what="the idle lease given back")


async def test_without_the_store_each_replica_takes_its_share() -> None:
    switch, clock = Switch(shared=False, count=3), Clock()
    leases, [gate] = gates(1, limit=7, switch=switch, clock=clock)
    held = [await asyncio.wait_for(gate.acquire(), 5) for _ in range(2)]  # 7 // 3
    third = asyncio.create_task(gate.acquire())
    for _ in range(20):
        await asyncio.sleep(0)  # every task that can run, runs: the third cannot
    assert not third.done()
    assert leases.calls == 0
    held[0].release()
    (await asyncio.wait_for(third, 5)).release()
    held[1].release()


async def test_a_store_that_stops_answering_never_blocks_a_request_and_the_share_holds() -> None:
    switch, clock = Switch(count=2), Clock()

    class Refusing(MemoryLeases):
        async def take(self, holder: str) -> tuple[bool, bool]:
            switch.shared = False  # as the link does on a failure
            raise FleetUnavailable("refused")

    gate = FleetGate(Refusing(4, TTL, clock, switch), switch, 4, holder="r", clock=clock)
    # Refused: the request goes on at once, on this replica's share (4 // 2).
    first = await asyncio.wait_for(gate.acquire(), 5)
    second = await asyncio.wait_for(gate.acquire(), 5)
    third = asyncio.create_task(gate.acquire())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done(), "a third request beside a share of 2"
    first.release()
    (await asyncio.wait_for(third, 5)).release()
    second.release()
    await gate.close()


async def test_a_lease_passes_to_the_next_waiting_request_of_its_replica() -> None:
    switch, clock = Switch(), Clock()
    leases, [gate] = gates(1, limit=1, switch=switch, clock=clock)
    first = await gate.acquire()
    second = asyncio.create_task(gate.acquire())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not second.done()  # the cap: it waits for the lease out here to come back
    first.release()
    (await asyncio.wait_for(second, 5)).release()
    assert leases.taken == 1  # handed over, not given back and taken again
    await gate.close()


async def test_once_others_wait_a_replica_keeps_no_lease_idle(
    monkeypatch: pytest.MonkeyPatch, wait_until: WaitUntil
) -> None:
    # A long linger, so "kept idle" and "given back at once" are seconds apart, not 0.2 s.
    linger = 3.0
    monkeypatch.setattr(gate_module, "LINGER", linger)
    switch, clock = Switch(count=2), Clock()
    leases, (a, b) = gates(2, limit=2, switch=switch, clock=clock)
    held = [await a.acquire(), await a.acquire()]
    waiting = asyncio.create_task(b.acquire())  # refused: the channel is wanted
    await wait_until(lambda: leases.wanted_until > clock(), what="b refused once")
    held[0].release()  # a has not heard yet: kept idle for the linger, then given back
    (await asyncio.wait_for(waiting, linger + 5)).release()  # b got it after that
    started = time.monotonic()
    held[1].release()  # a has heard now (its give-back's answer): back at once
    await wait_until(lambda: not any(h.startswith("r0") for h in leases.held), within=linger)
    assert time.monotonic() - started < linger  # not kept for the linger
    await a.close()
    await b.close()


# After an outage: nothing left behind


def outage(leases: MemoryLeases) -> None:
    leases.switch.shared = False


def back(leases: MemoryLeases) -> None:
    leases.switch.shared = True


async def test_a_give_back_that_failed_is_made_once_the_store_answers(
    wait_until: WaitUntil,
) -> None:
    """A blip while a request runs: its give-back fails, and the place would stay taken in
    the store for the lease's whole TTL (a cap-1 channel blocked fleet-wide). It is freed as
    soon as the store answers again, though no request of this replica comes."""
    switch, clock = Switch(count=2), Clock()
    leases, (a, b) = gates(2, limit=1, switch=switch, clock=clock)
    lease = await a.acquire()
    clock.offset += HOLD  # a long request: its lease goes back when it ends
    outage(leases)
    calls = leases.calls
    lease.release()
    await wait_until(lambda: leases.calls > calls, what="the give-back refused")
    assert leases.held
    back(leases)
    await wait_until(lambda: not leases.held, within=5, what="the place freed after the blip")
    other = await asyncio.wait_for(b.acquire(), 5)  # the other replica gets the cap
    other.release()
    await a.close()
    await b.close()


async def test_a_take_whose_answer_was_lost_is_freed_once_the_store_answers(
    wait_until: WaitUntil,
) -> None:
    """The take ran in Redis but its answer never came (a timeout): the replica falls back,
    and frees that unknown place once the store answers again."""
    switch, clock = Switch(count=2), Clock()

    class LostAnswer(MemoryLeases):
        lost = True

        async def take(self, holder: str) -> tuple[bool, bool]:
            granted = await super().take(holder)
            if self.lost:
                self.lost = False
                switch.shared = False  # the link falls back on the timeout
                raise FleetUnavailable("timed out")
            return granted

    leases = LostAnswer(1, TTL, clock, switch)
    gate = FleetGate(leases, switch, 1, holder="r0", clock=clock)
    local = await asyncio.wait_for(gate.acquire(), 5)  # on the fallback
    assert len(leases.held) == 1  # the place the lost answer took
    local.release()
    back(leases)
    await wait_until(lambda: not leases.held, within=5, what="the lost take freed")
    await gate.close()


async def test_a_take_cancelled_on_its_way_is_freed(wait_until: WaitUntil) -> None:
    switch, clock = Switch(), Clock()
    entered = asyncio.Event()

    class Slow(MemoryLeases):
        async def take(self, holder: str) -> tuple[bool, bool]:
            granted = await super().take(holder)
            entered.set()
            await asyncio.Event().wait()  # the answer never comes: cancelled meanwhile
            return granted

    leases = Slow(1, TTL, clock, switch)
    gate = FleetGate(leases, switch, 1, holder="r0", clock=clock)
    taking = asyncio.create_task(gate.acquire())
    await asyncio.wait_for(entered.wait(), 5)
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    assert leases.held
    await gate.close()  # what a lane's close does: the unknown place goes back
    assert not leases.held


async def test_requests_still_running_on_the_fallback_are_counted_when_the_store_is_back(
    wait_until: WaitUntil,
) -> None:
    """Two replicas, cap 2: one fell back and runs its share (1) when the store answers
    again. The other, back on the store, may then take 1 place, not 2: the cap holds for
    the fleet from the first moment, not once the fallback's requests have ended."""
    switch, clock = Switch(count=2), Clock()
    leases, (a, b) = gates(2, limit=2, switch=switch, clock=clock)
    outage(leases)
    running: Lease = await asyncio.wait_for(a.acquire(), 5)
    back(leases)
    await wait_until(lambda: len(leases.held) == 1, within=5, what="a's request counted")
    first = await asyncio.wait_for(b.acquire(), 5)
    second = asyncio.create_task(b.acquire())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not second.done(), "a third request beside a cap of 2"
    running.release()  # a's request ends: its place, counted in the store, goes back
    (await asyncio.wait_for(second, 5)).release()
    first.release()
    await a.close()
    await b.close()
    assert leases.most <= 2
