"""`dlq replay --rate`: letters go out no faster than asked, and never slower for no reason."""

from __future__ import annotations

from consumer.dlq import Pace


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


async def test_sends_are_spaced_at_the_rate() -> None:
    time = FakeTime()
    pace = Pace(200, clock=time.clock, sleep=time.sleep)
    for _ in range(1000):
        await pace.wait()
    # 1,000 sends at 200/s: the last goes out 999/200 s after the first, less one short burst.
    assert 999 / 200 - 0.03 <= time.now - 100.0 <= 999 / 200


async def test_time_spent_elsewhere_counts_towards_the_spacing() -> None:
    time = FakeTime()
    pace = Pace(10, clock=time.clock, sleep=time.sleep)
    for _ in range(20):
        await pace.wait()
        time.now += 0.5  # each send itself takes longer than the spacing
    assert time.slept == 0.0


async def test_a_pause_earns_no_burst_beyond_a_short_one() -> None:
    time = FakeTime()
    pace = Pace(100, clock=time.clock, sleep=time.sleep)
    await pace.wait()
    time.now += 60.0  # a minute without sends
    for _ in range(101):
        await pace.wait()
    # 100 intervals of 10 ms, less at most two short bursts: the credit and the unslept rest.
    assert time.slept >= 1.0 - 2 * 0.02 - 1e-9


async def test_no_rate_never_waits() -> None:
    time = FakeTime()
    pace = Pace(None, clock=time.clock, sleep=time.sleep)
    for _ in range(100):
        await pace.wait()
    assert time.slept == 0.0
