"""The fleet-wide circuit breaker over an in-memory circuit store: several replicas open it
together after `failures` in total, one of them probes, and the others follow; a healthy
channel costs no round trip per request."""

from __future__ import annotations

import asyncio

import pytest

from consumer.breaker import REGULAR, Admission, CircuitBreaker, State
from consumer.fleet.breaker import FleetBreaker

from .fleet_fakes import MemoryCircuit, Switch

FAILURES, COOLDOWN, MAX_COOLDOWN = 4, 30.0, 120.0
PROBE_TIMEOUT = 0.05  # seconds of real time others wait in `admit` for a probe's result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Changes = list[tuple[str, State]]


def fleet(
    n: int, switch: Switch, clock: Clock, changes: Changes
) -> tuple[MemoryCircuit, list[FleetBreaker]]:
    store = MemoryCircuit(switch, FAILURES, COOLDOWN, MAX_COOLDOWN, PROBE_TIMEOUT, clock)

    def breaker(name: str) -> FleetBreaker:
        def changed(state: State, _failures: int, _cooldown: float) -> None:
            changes.append((name, state))

        local = CircuitBreaker(
            FAILURES,
            COOLDOWN,
            MAX_COOLDOWN,
            probe_timeout=PROBE_TIMEOUT,
            on_change=changed,
            clock=clock,
        )
        return FleetBreaker(
            store,
            switch,
            local,
            cooldown_seconds=COOLDOWN,
            max_cooldown_seconds=MAX_COOLDOWN,
            probe_timeout=PROBE_TIMEOUT,
            holder=name,
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


async def send(breaker: FleetBreaker) -> Admission:
    """What a lane does before a request: admit, then (after its waits) confirm."""
    assert await breaker.admit()
    admission = await breaker.confirm()
    assert admission is not None
    return admission


async def fail(breaker: FleetBreaker) -> None:
    breaker.record(True, await send(breaker))


async def opened(store: MemoryCircuit, *replicas: FleetBreaker) -> None:
    for _ in range(FAILURES):
        await fail(replicas[0])
    await settle(*replicas)
    assert store.state is State.OPEN


@pytest.fixture
def changes() -> Changes:
    return []


async def test_a_healthy_channel_costs_no_round_trip_per_request(changes: Changes) -> None:
    clock, switch = Clock(), Switch(count=3)
    store, [breaker] = fleet(1, switch, clock, changes)
    for _ in range(100):
        assert breaker.blocked_for() is None
        assert await send(breaker) is REGULAR
        breaker.record(False, REGULAR)
    await settle()
    assert store.calls == 1  # one read before the first request, none after
    assert changes == []
    await breaker.close()


async def test_many_requests_at_once_share_one_read_of_the_circuit(changes: Changes) -> None:
    clock, switch = Clock(), Switch(count=3)
    store, [breaker] = fleet(1, switch, clock, changes)
    assert all(await asyncio.gather(*(breaker.admit() for _ in range(16))))
    assert store.calls == 1  # sixteen workers starting together: one round trip
    await breaker.close()


async def test_a_replica_reads_the_circuit_before_its_first_request(changes: Changes) -> None:
    """A replica whose lane was idle while the fleet opened the circuit (it never read it,
    or long ago) does not send on what it knew then."""
    clock, switch = Clock(), Switch(count=2)
    store, (a, idle) = fleet(2, switch, clock, changes)
    await opened(store, a)
    assert not await idle.admit()
    assert idle.blocked_for() == pytest.approx(COOLDOWN)
    await a.close()
    await idle.close()


async def test_a_failure_on_its_way_counts_before_the_next_request_goes(
    changes: Changes,
) -> None:
    """A request admitted while the circuit was closed waits, right before it goes, for a
    failure this replica reported meanwhile: if that one opened the circuit, it stays."""
    clock, switch = Clock(), Switch(count=1)
    store, [breaker] = fleet(1, switch, clock, changes)
    for _ in range(FAILURES - 1):
        await fail(breaker)
    assert await breaker.admit()  # admitted, then waits for its permit and lease
    breaker.record(True, await send(breaker))  # meanwhile the threshold's failure
    assert await breaker.confirm() is None
    assert store.state is State.OPEN
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
    await opened(store, *replicas)
    clock.now += COOLDOWN
    # One candidate per replica; the others of each replica wait for its probe, then give up.
    admitted = await asyncio.gather(*(r.admit() for r in replicas for _ in range(3)))
    assert admitted.count(True) == len(replicas)
    admissions = await asyncio.gather(*(r.confirm() for r in replicas))
    probes = [(r, t) for r, t in zip(replicas, admissions, strict=True) if t is not None]
    assert [t.probe for _, t in probes] == [True]  # one claim for the fleet
    assert store.claims == 1
    [(prober, admission)] = probes
    prober.record(False, admission)
    await settle(*replicas)
    assert store.state is State.CLOSED
    assert all(r.state is State.CLOSED for r in replicas)
    assert all([await r.admit() for r in replicas])
    assert {name for name, state in changes if state is State.CLOSED} == {"r0", "r1", "r2"}
    for r in replicas:
        await r.close()


async def test_the_claim_is_taken_right_before_the_request_not_at_admission(
    changes: Changes,
) -> None:
    """A probe that waits for a permit and a lease longer than its claim lives still holds a
    fresh claim when it goes out: no other replica can probe beside it."""
    clock, switch = Clock(), Switch(count=2)
    store, (a, b) = fleet(2, switch, clock, changes)
    await opened(store, a, b)
    clock.now += COOLDOWN
    assert await a.admit()
    assert store.claims == 0  # nothing claimed yet
    clock.now += PROBE_TIMEOUT * 10  # the waits for a permit and a lease
    admission = await a.confirm()
    assert admission is not None
    assert admission.probe
    assert store.probe_until == pytest.approx(clock.now + PROBE_TIMEOUT)
    await settle(b)
    assert await b.confirm() is None  # while a's probe is out
    assert store.claims == 1
    await a.close()
    await b.close()


async def test_a_probe_that_went_without_a_word_counts_as_failed(changes: Changes) -> None:
    """Its replica died (or its answer was lost): once its claim expired, the next claim finds
    a half-open circuit without a probe and opens it for a doubled cool-down, instead of
    letting another probe go at once."""
    clock, switch = Clock(), Switch(count=2)
    store, (a, b) = fleet(2, switch, clock, changes)
    await opened(store, a, b)
    clock.now += COOLDOWN
    await send(a)  # the probe, never answered
    clock.now += PROBE_TIMEOUT * 2
    await settle(b)
    assert await b.admit()  # the copy shows no probe out
    assert await b.confirm() is None
    assert (store.state, store.cooldown) == (State.OPEN, 2 * COOLDOWN)
    assert b.blocked_for() == pytest.approx(2 * COOLDOWN)
    assert store.claims == 1
    await a.close()
    await b.close()


async def test_only_the_probe_settles_a_half_open_circuit(changes: Changes) -> None:
    """A request that went out before the circuit opened and answers during the probe says
    nothing about the probe: the circuit stays half-open until the probe's own answer."""
    clock, switch = Clock(), Switch(count=1)
    store, [breaker] = fleet(1, switch, clock, changes)
    early = await send(breaker)  # sent while closed, answered much later
    await opened(store, breaker)
    clock.now += COOLDOWN
    probe = await send(breaker)
    assert probe.probe
    breaker.record(False, early)
    await settle(breaker)
    assert store.state is State.HALF_OPEN
    assert breaker.state is State.HALF_OPEN
    breaker.record(True, probe)
    await settle(breaker)
    assert (store.state, store.cooldown) == (State.OPEN, 2 * COOLDOWN)
    await breaker.close()


async def test_a_probe_whose_claim_expired_settles_nothing(changes: Changes) -> None:
    """Compare and delete by holder: a slow probe's answer, after its claim expired and
    another replica claimed, neither closes the circuit nor ends the other's probe."""
    clock, switch = Clock(), Switch(count=2)
    store, (a, b) = fleet(2, switch, clock, changes)
    await opened(store, a, b)
    clock.now += COOLDOWN
    slow = await send(a)
    clock.now += PROBE_TIMEOUT * 2
    await settle(b)
    assert await b.admit()
    assert await b.confirm() is None  # a's probe went without a word: open again
    clock.now += 2 * COOLDOWN
    await settle(b)
    probe = await send(b)
    assert probe.probe
    a.record(False, slow)  # a's answer, late
    await settle(a, b)
    assert store.state is State.HALF_OPEN
    assert store.probe_holder is not None
    assert store.probe_holder.startswith("r1")
    b.record(False, probe)
    await settle(a, b)
    assert store.state is State.CLOSED
    await a.close()
    await b.close()


async def test_a_failed_probe_doubles_the_cooldown_for_everyone(changes: Changes) -> None:
    clock, switch = Clock(), Switch(count=2)
    store, (a, b) = fleet(2, switch, clock, changes)
    await opened(store, a, b)
    clock.now += COOLDOWN
    a.record(True, await send(a))
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
    await opened(store, breaker)
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


async def test_the_stand_in_starts_from_the_last_shared_state(changes: Changes) -> None:
    """A blip while the fleet's circuit is open: the stand-in is open for what was left of
    the cool-down, not closed and sending at once."""
    clock, switch = Clock(), Switch(count=2)
    store, [breaker] = fleet(1, switch, clock, changes)
    await opened(store, breaker)
    clock.now += 10
    switch.shared = False
    assert breaker.state is State.OPEN
    assert breaker.blocked_for() == pytest.approx(COOLDOWN - 10)
    assert not await breaker.admit()
    await breaker.close()


async def test_after_an_outage_the_store_is_read_before_the_next_request(
    changes: Changes,
) -> None:
    """While this replica stood in alone, the fleet closed the circuit: back on the store it
    asks before deciding, and follows the fleet rather than its own stand-in."""
    clock, switch = Clock(), Switch(count=2)
    store, (a, b) = fleet(2, switch, clock, changes)
    await opened(store, a, b)
    switch.shared = False
    assert not await a.admit()  # the stand-in: open
    switch.shared = True
    await b.reset()  # meanwhile, the fleet closed it (an operator's reset)
    calls = store.calls
    assert await a.admit()
    assert store.calls == calls + 1  # one read, before the answer
    assert a.state is State.CLOSED
    await a.close()
    await b.close()


async def test_a_reset_closes_the_circuit_for_the_whole_fleet(changes: Changes) -> None:
    clock, switch = Clock(), Switch(count=2)
    store, (a, b) = fleet(2, switch, clock, changes)
    await opened(store, a, b)
    await a.reset()
    assert (store.state, store.failures, store.cooldown) == (State.CLOSED, 0, COOLDOWN)
    assert a.state is State.CLOSED
    await settle(b)  # what b's refresher does within half a second
    assert b.state is State.CLOSED
    assert await send(b) is REGULAR
    await a.close()
    await b.close()
