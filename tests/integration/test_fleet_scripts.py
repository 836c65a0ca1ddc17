"""One contract for the fleet's Lua scripts, run twice: against a real redis-server and
against the in-memory stores the unit tests use instead (`tests/unit/fleet_fakes.py`). A rule
the fakes get wrong fails here, so the unit tests cannot drift from what Redis does.

Both run on real time (Redis keeps its own clock), with durations long enough for a loaded
machine: what must expire is polled for, with a deadline, never slept for."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from consumer.breaker import State
from consumer.fleet.circuit import CircuitStore, RedisCircuit
from consumer.fleet.leases import LeaseStore, RedisLeases
from consumer.fleet.link import RedisLink
from consumer.fleet.permits import PermitSource, RedisPermits
from consumer.fleet.shared import ChannelKeys
from consumer.redisclient import open_redis
from tests.unit.fleet_fakes import MemoryCircuit, MemoryLeases, MemoryPermits, Switch

COOLDOWN, MOST, FAILURES, PROBE = 1.0, 4.0, 3, 1.0  # the circuit's settings, in seconds
TOLERANCE = 0.005  # seconds: Redis answers in whole microseconds and milliseconds


@dataclass
class Stores:
    """Makes the three stores of one channel, all sharing one state (one Redis, or one set
    of fakes), as the replicas of a fleet do."""

    permits: Callable[[float, int], PermitSource]
    leases: Callable[[int, float], LeaseStore]
    circuit: Callable[[], CircuitStore]


async def within(condition: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    """Poll an async condition until it holds, or `seconds` passed."""
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)  # polling a store for a condition, with a deadline
    return True


@pytest.fixture(params=["redis", "memory"])
async def stores(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Stores]:
    if request.param == "memory":
        switch, clock = Switch(), time.monotonic
        shared: dict[str, Any] = {}

        def memory_permits(rate: float, burst: int) -> PermitSource:
            return shared.setdefault("permits", MemoryPermits(rate, burst, clock, switch))  # type: ignore[no-any-return]

        def memory_leases(limit: int, ttl: float) -> LeaseStore:
            return shared.setdefault("leases", MemoryLeases(limit, ttl, clock, switch))  # type: ignore[no-any-return]

        def memory_circuit() -> CircuitStore:
            return shared.setdefault(  # type: ignore[no-any-return]
                "circuit", MemoryCircuit(switch, FAILURES, COOLDOWN, MOST, PROBE, clock)
            )

        yield Stores(memory_permits, memory_leases, memory_circuit)
        return
    client = open_redis(redis_url, timeout_seconds=2, max_connections=16, retry_once=False)
    blocking = open_redis(
        redis_url, timeout_seconds=2, max_connections=8, retry_once=False, reply_timeout_seconds=4
    )
    link = RedisLink(
        client, timeout_seconds=2, replicas=lambda: 1, shown_url=redis_url, blocking=blocking
    )
    keys = ChannelKeys(f"test-{uuid.uuid4().hex[:8]}:", "g", "c")
    try:
        yield Stores(
            lambda rate, burst: RedisPermits(link, keys, rate, burst),
            lambda limit, ttl: RedisLeases(link, keys, limit, ttl),
            lambda: RedisCircuit(
                link,
                keys,
                failures=FAILURES,
                cooldown_seconds=COOLDOWN,
                max_cooldown_seconds=MOST,
                probe_timeout=PROBE,
            ),
        )
    finally:
        await link.close()


def approx(value: float) -> Any:
    return pytest.approx(value, abs=TOLERANCE)


# Permits: GCRA with reservations


async def test_a_burst_then_one_slot_per_interval_within_a_span(stores: Stores) -> None:
    permits = stores.permits(10, 3)  # 0.1 s apart, 3 at once
    grant = await permits.grant(5)
    assert list(grant.slots) == [approx(s) for s in (0, 0, 0, 0.1, 0.2)]
    assert grant.next_free == approx(0.3)
    assert grant.paused_for == 0
    more = await permits.grant(100)  # a batch spans at most 0.2 s of the rate
    assert len(more.slots) == 3
    assert more.slots[0] == approx(0.3)


async def test_a_replica_back_from_its_fallback_gets_no_burst(stores: Stores) -> None:
    grant = await stores.permits(10, 3).grant(3, resume=True)
    assert list(grant.slots) == [approx(s) for s in (0, 0.1, 0.2)]


async def test_a_pause_holds_every_slot_and_is_only_ever_extended(stores: Stores) -> None:
    permits = stores.permits(100, 100)
    await permits.pause(1.0)
    await permits.pause(0.2)  # shorter: changes nothing
    grant = await permits.grant(2)
    assert 0.9 < grant.paused_for <= 1.0 + TOLERANCE
    assert grant.slots[0] == approx(grant.paused_for)


async def test_two_callers_share_one_rate(stores: Stores) -> None:
    a, b = stores.permits(10, 1), stores.permits(10, 1)
    first, second = await a.grant(1), await b.grant(1)
    assert first.slots[0] == approx(0)
    assert second.slots[0] == pytest.approx(0.1, abs=0.05)  # the round trip between them


# Leases: one cap, expiry, wake-ups, settling after an outage


async def test_the_cap_holds_and_a_refused_take_marks_the_channel_wanted(stores: Stores) -> None:
    leases = stores.leases(2, 30)
    assert await leases.take("a:1") == (True, False)
    assert await leases.take("b:1") == (True, False)
    assert await leases.take("b:2") == (False, True)
    assert await leases.give_back("a:1")  # others wait: true
    assert await leases.take("b:2") == (True, True)


async def test_a_give_back_wakes_one_waiter_and_an_unknown_one_none(stores: Stores) -> None:
    leases = stores.leases(1, 30)
    assert (await leases.take("a:1"))[0]
    await leases.give_back("nobody")
    assert not await leases.freed(0.3)
    await leases.give_back("a:1")
    assert await leases.freed(1.0)
    assert not await leases.freed(0.3)  # one token per give-back


async def test_a_lease_never_given_back_lapses_after_its_ttl(stores: Stores) -> None:
    leases = stores.leases(1, 1.0)
    assert (await leases.take("crashed:1"))[0]
    started = time.monotonic()
    assert not (await leases.take("b:1"))[0]

    async def granted() -> bool:
        return (await leases.take("b:1"))[0]

    assert await within(granted, 10)
    assert time.monotonic() - started >= 1.0 - TOLERANCE


async def test_settling_frees_the_uncertain_and_counts_the_running(stores: Stores) -> None:
    leases = stores.leases(2, 30)
    assert (await leases.take("a:1"))[0]  # its give-back was lost in the outage
    await leases.settle(["a:1", "a:never-taken"], ["a:2", "a:3"])
    assert await leases.freed(1.0)  # a:1's place was freed: one waiter woken
    assert not await leases.freed(0.3)  # a:never-taken held none
    assert await leases.take("b:1") == (False, True)  # a:2 and a:3 fill the cap of 2
    await leases.give_back("a:2")
    assert (await leases.take("b:1"))[0]


# The circuit: one state for the fleet, one probe per cool-down


async def open_circuit(circuit: CircuitStore) -> None:
    for _ in range(FAILURES - 1):
        assert (await circuit.failed(None)).state is State.CLOSED
    opened = await circuit.failed(None)
    assert (opened.state, opened.failures) == (State.OPEN, FAILURES)
    assert opened.open_for == approx(COOLDOWN)


async def cooled(circuit: CircuitStore) -> bool:
    return (await circuit.read()).open_for == 0


async def test_it_opens_after_failures_in_total_and_a_success_forgets_them(
    stores: Stores,
) -> None:
    a, b = stores.circuit(), stores.circuit()
    await a.failed(None)
    await b.failed(None)
    forgotten = await a.succeeded(None)
    assert (forgotten.state, forgotten.failures) == (State.CLOSED, 0)
    await open_circuit(b)
    assert not (await a.claim_probe("a:1"))[0]  # cooling down


async def test_after_the_cooldown_one_claim_wins(stores: Stores) -> None:
    circuits = [stores.circuit() for _ in range(3)]
    await open_circuit(circuits[0])
    assert await within(lambda: cooled(circuits[0]), 5)
    claims = await asyncio.gather(*(c.claim_probe(f"r{i}:1") for i, c in enumerate(circuits)))
    assert [claimed for claimed, _ in claims].count(True) == 1
    assert all(circuit.state is State.HALF_OPEN for _, circuit in claims)
    assert all(circuit.probing for _, circuit in claims)


async def test_only_the_holder_of_the_claim_settles_it(stores: Stores) -> None:
    circuit = stores.circuit()
    await open_circuit(circuit)
    assert await within(lambda: cooled(circuit), 5)
    claimed, _ = await circuit.claim_probe("r0:1")
    assert claimed
    late = await circuit.succeeded(None)  # a request sent before the circuit opened
    assert late.state is State.HALF_OPEN
    other = await circuit.failed("r1:7")  # not the holder: counted, settles nothing
    assert other.state is State.HALF_OPEN
    reopened = await circuit.failed("r0:1")
    assert (reopened.state, reopened.cooldown, reopened.probing) == (State.OPEN, 2.0, False)
    assert reopened.open_for == approx(2.0)


async def test_a_probe_whose_claim_expired_counts_as_failed(stores: Stores) -> None:
    circuit = stores.circuit()
    await open_circuit(circuit)
    assert await within(lambda: cooled(circuit), 5)
    assert (await circuit.claim_probe("r0:1"))[0]

    async def expired() -> bool:
        return not (await circuit.read()).probing

    assert await within(expired, 10)
    claimed, reopened = await circuit.claim_probe("r1:1")
    assert not claimed  # not at once: a whole doubled cool-down first
    assert (reopened.state, reopened.cooldown) == (State.OPEN, 2.0)
    settled = await circuit.succeeded("r0:1")  # the vanished probe's answer, late
    assert settled.state is State.OPEN


async def test_the_probe_that_holds_the_claim_closes_it(stores: Stores) -> None:
    circuit = stores.circuit()
    await open_circuit(circuit)
    assert await within(lambda: cooled(circuit), 5)
    assert (await circuit.claim_probe("r0:1"))[0]
    closed = await circuit.succeeded("r0:1")
    assert (closed.state, closed.failures, closed.cooldown, closed.probing) == (
        State.CLOSED,
        0,
        COOLDOWN,
        False,
    )


async def test_a_reset_closes_it_and_every_change_raises_the_version(stores: Stores) -> None:
    circuit = stores.circuit()
    versions = [(await circuit.read()).version]
    for _ in range(FAILURES):
        versions.append((await circuit.failed(None)).version)
    reset = await circuit.reset()
    versions.append(reset.version)
    assert versions == sorted(set(versions))  # strictly increasing
    assert (reset.state, reset.failures, reset.cooldown, reset.open_for) == (
        State.CLOSED,
        0,
        COOLDOWN,
        0,
    )
    assert not (await circuit.claim_probe("r0:1"))[0]
