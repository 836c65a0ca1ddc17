"""The per-channel token bucket, on a fake clock: bursts, refills, and the long-run rate."""

from __future__ import annotations

import asyncio
import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.ratelimit import TokenBucket


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_burst_is_free_then_one_slot_per_token() -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_second=10, burst=3, clock=clock)
    waits = [bucket.reserve() for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])


def test_tokens_refill_with_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_second=10, burst=5, clock=clock)
    for _ in range(5):
        assert bucket.reserve() == 0
    clock.now += 0.3  # three tokens back
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_refill_never_exceeds_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_second=10, burst=5, clock=clock)
    clock.now += 3600  # an idle hour is worth `burst` tokens, not 36000
    assert [bucket.reserve() for _ in range(7)] == pytest.approx([0] * 5 + [0.1, 0.2])


def test_debt_is_repaid_before_new_tokens_count() -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_second=2, burst=1, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0, 0.5, 1.0])
    clock.now += 0.5  # the caller that waited 0.5 has just sent
    assert bucket.reserve() == pytest.approx(1.0)


def _busiest_second(send_times: list[float]) -> int:
    times = sorted(send_times)
    # Half-open [t, t + 1) windows starting at every send; the epsilon absorbs float noise.
    return max(bisect.bisect_left(times, t + 1 - 1e-9) - i for i, t in enumerate(times))


@given(
    per_second=st.floats(min_value=0.5, max_value=200),
    burst=st.integers(min_value=1, max_value=50),
    idle=st.lists(st.floats(min_value=0, max_value=5), min_size=50, max_size=400),
)
def test_long_run_rate_and_windows(per_second: float, burst: int, idle: list[float]) -> None:
    """One caller sends whenever its reservation comes due, sometimes pausing in between."""
    clock = FakeClock()
    bucket = TokenBucket(per_second=per_second, burst=burst, clock=clock)
    sends = []
    for pause in idle:
        clock.now += pause
        clock.now += bucket.reserve()
        sends.append(clock.now)
    assert _busiest_second(sends) <= burst + per_second


@pytest.mark.parametrize(("per_second", "burst"), [(50, 50), (7.5, 2), (0.5, 1)])
def test_many_waiters_at_once_are_spread_at_the_rate(per_second: float, burst: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_second=per_second, burst=burst, clock=clock)
    count = int(per_second * 20) + burst
    sends = [clock.now + bucket.reserve() for _ in range(count)]
    assert sends == sorted(sends)  # FIFO: each waiter gets its own later slot
    assert _busiest_second(sends) <= burst + per_second
    span = sends[-1] - sends[0]
    assert (count - burst) / span == pytest.approx(per_second, rel=1e-6)


async def test_acquire_waits_the_reserved_time(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    bucket = TokenBucket(per_second=4, burst=1, clock=FakeClock())
    for _ in range(3):
        await bucket.acquire()
    assert slept == pytest.approx([0.25, 0.5])
