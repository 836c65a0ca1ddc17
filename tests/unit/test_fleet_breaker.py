"""The fleet-wide circuit breaker over an in-memory circuit store: several replicas open it
together after `failures` in total, one of them probes, and the others follow; a healthy
channel costs no round trip per request."""

from __future__ import annotations

import asyncio

import pytest

from consumer.breaker import CircuitBreaker, State
from consumer.fleet.breaker import FleetBreaker

from .fleet_fakes import MemoryCircuit, Switch

FAILURES, COOLDOWN, MAX_COOLDOWN = 4, 30.0, 120.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Changes = list[tuple[str, State]]


def fleet(
    n: int, switch: Switch, clock: Clock, changes: Changes
) -> tuple[MemoryCircuit, list[FleetBreaker]]:
    store = MemoryCircuit(switch, FAILURES, COOLDOWN, MAX_COOLDOWN, 0.05, clock)

    def breaker(name: str) -> FleetBreaker:
        def changed(state: State, _failures: int, _cooldown: float) -> None:
            changes.append((name, state))

        local = CircuitBreaker(
            FAILURES, COOLDOWN, MAX_COOLDOWN, probe_timeout=0.05, on_change=changed, clock=clock
        )
        return FleetBreaker(
            store,
            switch,
            local,
            cooldown_seconds=COOLDOWN,
            max_cooldown_seconds=MAX_COOLDOWN,
            probe_timeout=0.05,
            on_change=changed,
            clock=clock,
        )

    return store, [breaker(f"r{i}") for i in range(n)]


async def settle(*breakers: FleetBreaker) -> None:
    """Let the background writes land, then read the shared state as the refresher would."""
    for _ in range(5):
        await asyncio.sleep(0)
    for breaker in breakers:
        await breaker.refresh()


async def fail(breaker: FleetBreaker) -> None:
    assert await breaker.admit()
    breaker.record(failure=True)


@pytest.fixture
def changes() -> Changes:
    return []


async def test_a_healthy_channel_costs_no_round_trip_per_request(changes: Changes) -> None:
    clock, switch = Clock(), Switch(count=3)
    store, [breaker] = fleet(1, switch, clock, changes)
    for _ in range(100):
        assert breaker.blocked_for() is None
        assert await breaker.admit()
        breaker.record(failure=False)
    await settle()
    assert store.calls == 0
    assert changes == []
    await breaker.close()


async def test_the_circuit_opens_after_failures_in_total_across_replicas(
    changes: Changes,
) -> None:
    clock, switch = Clock(), Switch(count=3)
    store, replicas = fleet(3, switch, clock, changes)
    for i in range(FAILURES - 1):
        await fail(replicas[i % 3])  # three replicas, one failure each: not enough alone
    await settle(*replicas)
    assert store.state is State.CLOSED
    assert all(r.blocked_for() is None for r in replicas)
    await fail(replicas[0])
    await settle(*replicas)
    assert store.state is State.OPEN
    assert all(r.blocked_for() == pytest.approx(COOLDOWN) for r in replicas)
    assert not any([await r.admit() for r in replicas])
    assert sorted(changes) == [("r0", State.OPEN), ("r1", State.OPEN), ("r2", State.OPEN)]
    for r in replicas:
        await r.close()


async def test_after_the_cooldown_exactly_one_replica_probes(changes: Changes) -> None:
    clock, switch = Clock(), Switch(count=3)
    store, replicas = fleet(3, switch, clock, changes)
    for _ in range(FAILURES):
        await fail(replicas[0])
    await settle(*replicas)
    clock.now += COOLDOWN
    admitted = await asyncio.gather(*(r.admit() for r in replicas for _ in range(3)))
    assert admitted.count(True) == 1  # the others waited for the probe, then gave up
    assert store.claims == 1
    [prober] = [r for r in replicas if r.state is State.HALF_OPEN and r._probing()]
    prober.record(failure=False)
    await settle(*replicas)
    assert store.state is State.CLOSED
    assert all(r.state is State.CLOSED for r in replicas)
    assert all([await r.admit() for r in replicas])
    assert {name for name, state in changes if state is State.CLOSED} == {"r0", "r1", "r2"}
    for r in replicas:
        await r.close()


async def test_a_failed_probe_doubles_the_cooldown_for_everyone(changes: Changes) -> None:
    clock, switch = Clock(), Switch(count=2)
    store, (a, b) = fleet(2, switch, clock, changes)
    for _ in range(FAILURES):
        await fail(a)
    await settle(a, b)
    clock.now += COOLDOWN
    assert await a.admit()
    a.record(failure=True)
    assert a.state is State.OPEN  # known here at once
    assert a.blocked_for() == pytest.approx(2 * COOLDOWN)
    await settle(a, b)
    assert store.cooldown == 2 * COOLDOWN
    assert b.blocked_for() == pytest.approx(2 * COOLDOWN)
    await a.close()
    await b.close()


async def test_a_late_answer_never_undoes_a_newer_state(changes: Changes) -> None:
    clock, switch = Clock(), Switch()
    store, [breaker] = fleet(1, switch, clock, changes)
    stale = await store.read()  # the closed circuit, read before it opened
    for _ in range(FAILURES):
        await fail(breaker)
    await settle(breaker)
    assert breaker.state is State.OPEN
    breaker._learn(stale)
    assert breaker.state is State.OPEN
    await breaker.close()


async def test_without_the_store_the_local_breaker_stands_in(changes: Changes) -> None:
    clock, switch = Clock(), Switch(shared=False)
    store, [breaker] = fleet(1, switch, clock, changes)
    for _ in range(FAILURES):
        await fail(breaker)
    assert breaker.state is State.OPEN
    assert breaker.blocked_for() == pytest.approx(COOLDOWN)
    assert store.calls == 0
    assert changes == [("r0", State.OPEN)]
    await breaker.close()


async def test_a_reset_closes_the_circuit_for_every_replica(changes: Changes) -> None:
    clock, switch = Clock(), Switch(count=2)
    store, (a, b) = fleet(2, switch, clock, changes)
    for _ in range(FAILURES):
        await fail(a)
    await settle(a, b)
    assert store.state is State.OPEN
    assert b.blocked_for() is not None
    b.reset()  # `channels reset-circuit`, acted upon by one replica, reaches the store
    assert b.state is State.CLOSED  # at once here
    await settle(a, b)
    assert store.state is State.CLOSED
    assert a.blocked_for() is None
    assert await a.admit()
    for r in (a, b):
        await r.close()
