"""The per-channel circuit breaker, on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from consumer.breaker import CircuitBreaker, State

FAILURES = 3
COOLDOWN = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("crm", FAILURES, COOLDOWN, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record(success=False)


def test_a_new_breaker_is_closed_and_lets_everything_through(breaker: CircuitBreaker) -> None:
    assert breaker.state is State.CLOSED
    assert all(breaker.allow() for _ in range(100))


def test_opens_after_n_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker, FAILURES - 1)
    assert breaker.state is State.CLOSED
    fail(breaker, 1)
    assert breaker.state is State.OPEN
    assert not breaker.allow()


def test_a_success_resets_the_consecutive_count(breaker: CircuitBreaker) -> None:
    fail(breaker, FAILURES - 1)
    breaker.record(success=True)
    fail(breaker, FAILURES - 1)
    assert breaker.state is State.CLOSED
    fail(breaker, 1)
    assert breaker.state is State.OPEN


def test_stays_open_until_the_cooldown_has_passed(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, FAILURES)
    clock.now += COOLDOWN - 0.001
    assert not any(breaker.allow() for _ in range(10))
    assert breaker.state is State.OPEN


def test_after_the_cooldown_exactly_one_probe_goes_out(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail(breaker, FAILURES)
    clock.now += COOLDOWN
    answers = [breaker.allow() for _ in range(10)]
    assert answers == [True] + [False] * 9
    assert breaker.state is State.HALF_OPEN


def test_a_successful_probe_closes(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, FAILURES)
    clock.now += COOLDOWN
    assert breaker.allow()
    breaker.record(success=True)
    assert breaker.state is State.CLOSED
    assert all(breaker.allow() for _ in range(10))
    fail(breaker, FAILURES - 1)  # the count started again from zero
    assert breaker.state is State.CLOSED


def test_a_failed_probe_reopens_for_a_new_cooldown(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, FAILURES)
    clock.now += COOLDOWN
    assert breaker.allow()
    clock.now += 5.0  # the probe took a while
    breaker.record(success=False)
    assert breaker.state is State.OPEN
    clock.now += COOLDOWN - 0.001  # counted from the failed probe, not the first opening
    assert not breaker.allow()
    clock.now += 0.001
    assert breaker.allow()
    assert breaker.state is State.HALF_OPEN
