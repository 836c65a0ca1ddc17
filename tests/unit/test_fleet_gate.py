"""The fleet-wide concurrency cap over an in-memory lease store: replicas share one cap, a
lease serves several requests of one replica, and without the store each takes its share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from consumer.fleet.gate import HOLD, FleetGate
from consumer.fleet.shared import FleetUnavailable

from .fleet_fakes import MemoryLeases, Switch


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def gates(n: int, limit: int, switch: Switch, clock: Clock) -> tuple[MemoryLeases, list[FleetGate]]:
    leases = MemoryLeases(limit, ttl=30, clock=clock, switch=switch)
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


async def test_an_unused_lease_goes_back_soon() -> None:
    switch, clock = Switch(), Clock()
    leases, [gate] = gates(1, limit=1, switch=switch, clock=clock)
    (await gate.acquire()).release()
    assert leases.held  # kept a moment for this replica's next request
    assert await eventually(lambda: not leases.held, within=5)


async def eventually(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)  # polling for a condition, with a deadline
    return True


async def test_without_the_store_each_replica_takes_its_share() -> None:
    switch, clock = Switch(shared=False, count=3), Clock()
    leases, [gate] = gates(1, limit=7, switch=switch, clock=clock)
    held = [await gate.acquire() for _ in range(2)]  # 7 // 3
    third = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.05)
    assert not third.done()
    assert leases.calls == 0
    held[0].release()
    (await asyncio.wait_for(third, 1)).release()
    held[1].release()


async def test_a_store_that_stops_answering_never_blocks_a_request() -> None:
    switch, clock = Switch(count=2), Clock()

    class Refusing(MemoryLeases):
        async def take(self, holder: str) -> bool:
            switch.shared = False  # as the link does on a failure
            raise FleetUnavailable("refused")

    gate = FleetGate(Refusing(4, 30, clock, switch), switch, 4, holder="r", clock=clock)
    lease = await asyncio.wait_for(gate.acquire(), 1)
    lease.release()
    await gate.close()


async def test_a_lease_passes_to_the_next_waiting_request_of_its_replica() -> None:
    switch, clock = Switch(), Clock()
    leases, [gate] = gates(1, limit=1, switch=switch, clock=clock)
    first = await gate.acquire()
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0.01)
    assert not second.done()  # the cap: it waits for the lease out here to come back
    first.release()
    (await asyncio.wait_for(second, 1)).release()
    assert leases.taken == 1  # handed over, not given back and taken again
    await gate.close()


async def test_once_others_wait_a_replica_keeps_no_lease_idle() -> None:
    switch, clock = Switch(count=2), Clock()
    leases, (a, b) = gates(2, limit=2, switch=switch, clock=clock)
    held = [await a.acquire(), await a.acquire()]
    waiting = asyncio.create_task(b.acquire())  # refused: the channel is wanted
    await asyncio.sleep(0.01)
    held[0].release()  # a has not heard yet: kept idle a moment, then given back
    (await asyncio.wait_for(waiting, 2)).release()  # b got it after that moment
    held[1].release()  # a has heard now (its give-back's answer): back at once
    assert await eventually(lambda: not any(h.startswith("r0") for h in leases.held), 0.1)
    await a.close()
    await b.close()
