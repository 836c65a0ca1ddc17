"""The local concurrency gate: a cap, served in order, resizable while leases are out."""

from __future__ import annotations

import asyncio

import pytest

from consumer.concurrency import UNLIMITED, LocalGate
from tests.support.polling import wait_until


def test_unlimited_never_waits() -> None:
    for _ in range(1000):
        acquiring = UNLIMITED.acquire()
        # Driven by hand: a gate that suspended (waited for anything) would not finish here.
        with pytest.raises(StopIteration) as done:
            acquiring.send(None)
        done.value.value.release()


async def test_at_most_limit_leases_and_waiters_in_order() -> None:
    gate = LocalGate(2)
    first, second = await gate.acquire(), await gate.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        lease = await gate.acquire()
        order.append(n)
        lease.release()

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await wait_until(lambda: gate.waiting == 3, what="all three queued")
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
    await wait_until(lambda: gate.waiting == 1, what="queued")
    leases[0].release()
    leases[1].release()
    assert (gate.waiting, gate.held) == (1, 1)  # one still out, and the cap is now one
    leases[2].release()
    (await waiter).release()
    assert gate.held == 0


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    gate = LocalGate(1)
    held = await gate.acquire()
    cancelled = asyncio.create_task(gate.acquire())
    later = asyncio.create_task(gate.acquire())
    await wait_until(lambda: gate.waiting == 2, what="both queued")
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    held.release()
    (await asyncio.wait_for(later, 1)).release()
    assert gate.held == 0
