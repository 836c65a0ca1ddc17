"""The local concurrency gate: a cap, served in order, resizable while leases are out."""

from __future__ import annotations

import asyncio

import pytest

from consumer.concurrency import UNLIMITED, LocalGate


async def test_unlimited_never_waits() -> None:
    acquiring = asyncio.gather(*(UNLIMITED.acquire() for _ in range(1000)))
    leases = await asyncio.wait_for(acquiring, 5)  # a gate that made anyone wait fails here
    assert len(leases) == 1000
    for lease in leases:
        lease.release()


async def test_at_most_limit_leases_and_waiters_in_order() -> None:
    gate = LocalGate(2)
    first, second = await gate.acquire(), await gate.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        lease = await gate.acquire()
        order.append(n)
        lease.release()

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    assert gate.held == 2
    assert order == []
    first.release()
    first.release()  # idempotent: one lease comes back once
    second.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert gate.held == 0


async def test_a_smaller_limit_applies_as_leases_come_back() -> None:
    gate = LocalGate(3)
    leases = [await gate.acquire() for _ in range(3)]
    gate.resize(1)
    waiter = asyncio.create_task(gate.acquire())
    leases[0].release()
    leases[1].release()
    await asyncio.sleep(0)
    assert not waiter.done()  # one still out, and the cap is now one
    leases[2].release()
    (await waiter).release()
    assert gate.held == 0


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    gate = LocalGate(1)
    held = await gate.acquire()
    cancelled = asyncio.create_task(gate.acquire())
    later = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    held.release()
    (await asyncio.wait_for(later, 1)).release()
    assert gate.held == 0
