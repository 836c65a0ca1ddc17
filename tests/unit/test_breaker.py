"""The per-channel circuit breaker, on a clock the test moves by hand."""

from __future__ import annotations

import asyncio

import pytest

from consumer.breaker import CircuitBreaker, State
from tests.support.clock import ManualClock
from tests.support.polling import wait_until

FAILURES = 3
COOLDOWN = 30.0
MAX_COOLDOWN = 100.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def changes() -> list[tuple[State, float]]:
    return []


@pytest.fixture
def breaker(clock: ManualClock, changes: list[tuple[State, float]]) -> CircuitBreaker:
    return CircuitBreaker(
        FAILURES,
        COOLDOWN,
        MAX_COOLDOWN,
        probe_timeout=0.05,
        on_change=lambda state, _failures, cooldown: changes.append((state, cooldown)),
        clock=clock,
    )


async def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert await breaker.admit()
        breaker.record(failure=True)


async def test_a_new_breaker_is_closed_and_lets_everything_through(
    breaker: CircuitBreaker,
) -> None:
    assert breaker.state is State.CLOSED
    assert breaker.blocked_for() is None
    assert all([await breaker.admit() for _ in range(100)])


async def test_opens_after_n_consecutive_failures(breaker: CircuitBreaker) -> None:
    await fail(breaker, FAILURES - 1)
    assert breaker.state is State.CLOSED
    await fail(breaker, 1)
    assert breaker.state is State.OPEN
    assert not await breaker.admit()
    assert breaker.blocked_for() == pytest.approx(COOLDOWN)


async def test_a_success_resets_the_consecutive_count(breaker: CircuitBreaker) -> None:
    await fail(breaker, FAILURES - 1)
    breaker.record(failure=False)
    await fail(breaker, FAILURES - 1)
    assert breaker.state is State.CLOSED
    await fail(breaker, 1)
    assert breaker.state is State.OPEN


async def test_stays_open_until_the_cooldown_has_passed(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await fail(breaker, FAILURES)
    clock.now += COOLDOWN - 0.25
    assert not any([await breaker.admit() for _ in range(10)])
    assert breaker.blocked_for() == pytest.approx(0.25)
    assert breaker.state is State.OPEN


async def test_after_the_cooldown_exactly_one_probe_goes_out_and_the_rest_await_it(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await fail(breaker, FAILURES)
    clock.now += COOLDOWN
    assert breaker.blocked_for() is None  # arrivals are queued: they wait for the probe
    assert await breaker.admit()
    assert breaker.state is State.HALF_OPEN
    waiting = [asyncio.create_task(breaker.admit()) for _ in range(5)]
    await wait_until(lambda: breaker.awaiting_probe == 5, what="all five wait for the probe")
    assert not any(task.done() for task in waiting)
    breaker.record(failure=False)  # the probe succeeded
    assert await asyncio.gather(*waiting) == [True] * 5
    assert breaker.state is State.CLOSED


async def test_those_awaiting_a_failed_probe_are_refused(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await fail(breaker, FAILURES)
    clock.now += COOLDOWN
    assert await breaker.admit()
    waiting = asyncio.create_task(breaker.admit())
    await wait_until(lambda: breaker.awaiting_probe == 1, what="waiting for the probe")
    breaker.record(failure=True)
    assert await waiting is False
    assert breaker.state is State.OPEN


async def test_a_probe_that_never_reports_back_does_not_hold_others_forever(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await fail(breaker, FAILURES)
    clock.now += COOLDOWN
    assert await breaker.admit()
    assert await asyncio.wait_for(breaker.admit(), 1) is False


async def test_each_failed_probe_doubles_the_cooldown_up_to_the_cap(
    breaker: CircuitBreaker, clock: ManualClock, changes: list[tuple[State, float]]
) -> None:
    await fail(breaker, FAILURES)
    cooldowns = []
    for _ in range(4):
        clock.now += breaker.blocked_for() or 0
        assert await breaker.admit()
        clock.now += 5.0  # the probe took a while
        breaker.record(failure=True)
        cooldowns.append(breaker.cooldown)
        # Counted from the failed probe, not the first opening.
        assert breaker.blocked_for() == pytest.approx(breaker.cooldown)
    assert cooldowns == [60.0, 100.0, 100.0, 100.0]
    clock.now += MAX_COOLDOWN
    assert await breaker.admit()
    breaker.record(failure=False)
    assert breaker.cooldown == COOLDOWN  # a recovered receiver starts afresh
    assert [state for state, _ in changes][:3] == [State.OPEN, State.HALF_OPEN, State.OPEN]
    assert changes[-1] == (State.CLOSED, COOLDOWN)


async def test_a_successful_probe_closes_and_the_count_starts_again(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await fail(breaker, FAILURES)
    clock.now += COOLDOWN
    assert await breaker.admit()
    breaker.record(failure=False)
    assert breaker.state is State.CLOSED
    await fail(breaker, FAILURES - 1)
    assert breaker.state is State.CLOSED


async def test_a_reset_closes_an_open_circuit_with_the_base_cooldown(
    breaker: CircuitBreaker, clock: ManualClock, changes: list[tuple[State, float]]
) -> None:
    await fail(breaker, FAILURES)
    clock.now += COOLDOWN
    assert await breaker.admit()  # the probe
    breaker.record(failure=True)  # fails: the cool-down doubles
    assert breaker.blocked_for() == pytest.approx(2 * COOLDOWN)
    await breaker.reset()
    assert breaker.state is State.CLOSED
    assert breaker.blocked_for() is None
    assert changes[-1] == (State.CLOSED, COOLDOWN)
    await fail(breaker, FAILURES)  # a full count of failures is needed to open it again
    assert breaker.blocked_for() == pytest.approx(COOLDOWN)


async def test_a_reset_releases_whoever_waits_for_a_probe(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    await fail(breaker, FAILURES)
    clock.now += COOLDOWN
    assert await breaker.admit()  # the probe, never answered
    waiting = asyncio.create_task(breaker.admit())
    await asyncio.sleep(0)
    await breaker.reset()
    assert await asyncio.wait_for(waiting, 1)
