"""The per-channel rate limit, on a fake clock: bursts, refills, the long-run rate, pauses."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.ratelimit import LocalLimiter
from tests.support.clock import ManualClock
from tests.support.timing import busiest_second


def test_burst_is_free_then_one_slot_per_token() -> None:
    clock = ManualClock()
    bucket = LocalLimiter(per_second=10, burst=3, clock=clock)
    waits = [bucket.reserve() for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])


def test_tokens_refill_with_time() -> None:
    clock = ManualClock()
    bucket = LocalLimiter(per_second=10, burst=5, clock=clock)
    for _ in range(5):
        assert bucket.reserve() == 0
    clock.now += 0.3  # three tokens back
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1], abs=1e-9)


def test_refill_never_exceeds_burst() -> None:
    clock = ManualClock()
    bucket = LocalLimiter(per_second=10, burst=5, clock=clock)
    clock.now += 3600  # an idle hour is worth `burst` tokens, not 36000
    assert [bucket.reserve() for _ in range(7)] == pytest.approx([0] * 5 + [0.1, 0.2], abs=1e-9)


def test_debt_is_repaid_before_new_tokens_count() -> None:
    clock = ManualClock()
    bucket = LocalLimiter(per_second=2, burst=1, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0, 0.5, 1.0])
    clock.now += 0.5  # the caller that waited 0.5 has just sent
    assert bucket.reserve() == pytest.approx(1.0)


@given(
    per_second=st.floats(min_value=0.5, max_value=200),
    burst=st.integers(min_value=1, max_value=50),
    idle=st.lists(st.floats(min_value=0, max_value=5), min_size=50, max_size=400),
)
def test_long_run_rate_and_windows(per_second: float, burst: int, idle: list[float]) -> None:
    """One caller sends whenever its reservation comes due, sometimes pausing in between."""
    clock = ManualClock()
    bucket = LocalLimiter(per_second=per_second, burst=burst, clock=clock)
    sends = []
    for pause in idle:
        clock.now += pause
        clock.now += bucket.reserve()
        sends.append(clock.now)
    assert busiest_second(sends) <= burst + per_second


@pytest.mark.parametrize(("per_second", "burst"), [(50, 50), (7.5, 2), (0.5, 1)])
def test_many_waiters_at_once_are_spread_at_the_rate(per_second: float, burst: int) -> None:
    clock = ManualClock()
    bucket = LocalLimiter(per_second=per_second, burst=burst, clock=clock)
    count = int(per_second * 20) + burst
    sends = [clock.now + bucket.reserve() for _ in range(count)]
    assert sends == sorted(sends)  # FIFO: each waiter gets its own later slot
    assert busiest_second(sends) <= burst + per_second
    span = sends[-1] - sends[0]
    assert (count - burst) / span == pytest.approx(per_second, rel=1e-6)


async def test_acquire_waits_the_reserved_time(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    bucket = LocalLimiter(per_second=4, burst=1, clock=ManualClock())
    waited = [await bucket.acquire() for _ in range(3)]
    assert slept == pytest.approx([0.25, 0.5])
    assert waited == pytest.approx([0, 0.25, 0.5])


def test_without_a_rate_only_pauses_limit() -> None:
    clock = ManualClock()
    unlimited = LocalLimiter(clock=clock)
    assert [unlimited.reserve() for _ in range(1000)] == [0] * 1000
    unlimited.pause(30)
    assert unlimited.free_in() == pytest.approx(30)
    assert unlimited.reserve() == pytest.approx(30)
    clock.now += 30
    assert unlimited.reserve() == 0
    assert unlimited.paused_for() == 0


def test_a_pause_holds_every_caller_then_the_rate_resumes() -> None:
    """What a 429 with Retry-After does: the whole lane waits, then sends at its rate again."""
    clock = ManualClock()
    limiter = LocalLimiter(per_second=10, burst=2, clock=clock)
    assert [limiter.reserve() for _ in range(2)] == [0, 0]
    limiter.pause(5)
    assert limiter.paused_for() == pytest.approx(5)
    waits = [limiter.reserve() for _ in range(4)]
    assert waits == pytest.approx([5, 5, 5.1, 5.2])  # a burst at the end of the pause, then 10/s


def test_pauses_only_ever_extend() -> None:
    clock = ManualClock()
    limiter = LocalLimiter(clock=clock)
    limiter.pause(10)
    limiter.pause(2)  # a shorter wish does not cut a longer one short
    assert limiter.paused_for() == pytest.approx(10)


async def test_a_pause_that_arrives_while_waiting_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()
    limiter = LocalLimiter(per_second=1, burst=1, clock=clock)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds
        if len(slept) == 1:
            limiter.pause(10)  # a 429 answered while this caller slept on its slot

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    limiter.reserve()
    waited = await limiter.acquire()
    assert slept[0] == pytest.approx(1)
    assert waited >= 10  # it did not go out inside the pause


def test_slots_given_out_elsewhere_are_followed_without_a_burst() -> None:
    clock = ManualClock()
    bucket = LocalLimiter(per_second=10, burst=5, clock=clock)
    bucket.taken_until(clock.now + 0.5)  # another limiter stood in until then
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.6, 0.7, 0.8])
    assert bucket.reserved_until == pytest.approx(clock.now + 0.8)
