"""The fleet-wide rate limiter over an in-memory permit source, in virtual time: several
replicas together keep the rate, permits come in batches that follow demand, a pause reaches
every replica, and a store that stops answering leaves each replica its share."""

from __future__ import annotations

import bisect
import itertools

import pytest

from consumer.fleet.limiter import LOOKAHEAD, FleetLimiter
from consumer.fleet.permits import Grant
from consumer.fleet.shared import FleetUnavailable

from .fleet_fakes import MemoryPermits, Switch, VirtualTime


def busiest_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + 1 - 1e-9) - i for i, t in enumerate(ordered))


def replicas(
    n: int, per_second: float, burst: int, time: VirtualTime, switch: Switch
) -> tuple[MemoryPermits, list[FleetLimiter]]:
    permits = MemoryPermits(per_second, burst, time, switch)
    limiters = [
        FleetLimiter(permits, switch, per_second, burst, clock=time, sleep=time.sleep)
        for _ in range(n)
    ]
    return permits, limiters


async def demand(limiter: FleetLimiter, time: VirtualTime, until: float, out: list[float]) -> None:
    while time() < until:
        await limiter.acquire()
        out.append(time())


async def test_replicas_together_keep_one_rate_and_burst() -> None:
    time, switch = VirtualTime(), Switch(count=3)
    _, limiters = replicas(3, per_second=100, burst=100, time=time, switch=switch)
    sent: list[float] = []
    end = time() + 30
    await time.run(*(demand(lim, time, end, sent) for lim in limiters for _ in range(16)))
    assert busiest_second(sent) <= 200
    steady = [t for t in sent if t >= time.now - 29]  # after the first second's burst
    assert len(steady) / 29 == pytest.approx(100, rel=0.05)


async def test_a_busy_channel_takes_several_permits_per_round_trip() -> None:
    time, switch = VirtualTime(), Switch(count=3)
    permits, limiters = replicas(3, per_second=500, burst=50, time=time, switch=switch)
    sent: list[float] = []
    end = time() + 10
    await time.run(*(demand(lim, time, end, sent) for lim in limiters for _ in range(16)))
    per_trip = len(sent) / permits.calls
    assert per_trip >= 5, f"{per_trip:.1f} permits per round trip"
    assert max(permits.asked) <= 500 * LOOKAHEAD


async def test_a_slow_channel_asks_for_one_permit_at_a_time() -> None:
    time, switch = VirtualTime(), Switch(count=3)
    permits, limiters = replicas(3, per_second=5, burst=1, time=time, switch=switch)
    sent: list[float] = []
    end = time() + 10
    await time.run(*(demand(lim, time, end, sent) for lim in limiters for _ in range(4)))
    assert set(permits.asked) == {1}
    assert busiest_second(sent) <= 6


async def test_a_permit_whose_time_passed_is_dropped_not_spent_late() -> None:
    time, switch = VirtualTime(), Switch()
    permits, [limiter] = replicas(1, per_second=100, burst=10, time=time, switch=switch)
    sent: list[float] = []
    await time.run(*(demand(limiter, time, time() + 0.001, sent) for _ in range(5)))
    granted_before = permits.calls
    time.now += 5  # whatever was left over is long stale
    await limiter.acquire()
    assert permits.calls == granted_before + 1


async def test_a_pause_holds_every_replica_and_is_known_without_a_round_trip() -> None:
    time, switch = VirtualTime(), Switch(count=2)
    permits, (a, b) = replicas(2, per_second=10, burst=10, time=time, switch=switch)
    await time.run(a.acquire(), b.acquire())
    a.pause(3)
    calls = permits.calls
    assert a.paused_for() == pytest.approx(3)
    assert a.free_in() == pytest.approx(3)
    assert permits.calls == calls  # answered from local state
    await time.run(b.acquire())  # b hears of the pause with its next grant
    assert permits.pauses == [3]
    assert time.now >= permits.paused_until


async def test_free_in_answers_from_the_last_grant_without_a_round_trip() -> None:
    time, switch = VirtualTime(), Switch(count=2)
    permits, [limiter] = replicas(1, per_second=10, burst=1, time=time, switch=switch)
    await time.run(limiter.acquire())
    calls = permits.calls
    assert limiter.free_in() == pytest.approx(0.1)  # the burst of 1 is spent
    time.now += 0.05
    assert limiter.free_in() == pytest.approx(0.05)
    assert permits.calls == calls


async def test_while_the_store_is_down_each_replica_takes_its_share() -> None:
    time, switch = VirtualTime(), Switch(shared=False, count=4)
    permits, [limiter] = replicas(1, per_second=100, burst=100, time=time, switch=switch)
    sent: list[float] = []
    end = time() + 10
    await time.run(*(demand(limiter, time, end, sent) for _ in range(16)))
    assert permits.calls == 0  # no round trip is even tried
    assert busiest_second(sent) <= 25 + 25  # 100/4 per second, burst 100/4
    steady = [t for t in sent if t >= time.now - 9]
    assert len(steady) / 9 == pytest.approx(25, rel=0.1)


async def test_a_failed_round_trip_falls_back_at_once() -> None:
    time, switch = VirtualTime(), Switch(count=2)

    class Failing(MemoryPermits):
        async def grant(self, count: int, resume: bool = False) -> object:  # type: ignore[override]
            switch.shared = False  # as the link does on a failure
            raise FleetUnavailable("refused")

    failing = Failing(10, 10, time, switch)
    limiter = FleetLimiter(failing, switch, 10, 10, clock=time, sleep=time.sleep)
    [waited] = await time.run(limiter.acquire())
    assert waited == 0  # the fallback's burst: 10 // 2
    assert limiter.free_in() == 0


async def flip(switch: Switch, time: VirtualTime, at: float, shared: bool) -> None:
    await time.sleep(at - time())
    switch.shared = shared


async def test_switching_to_the_fallback_adds_no_burst_on_top_of_shared_slots() -> None:
    time, switch = VirtualTime(), Switch(count=2)
    _, [limiter] = replicas(1, per_second=10, burst=10, time=time, switch=switch)
    sent: list[float] = []
    start = time()
    # The store stops answering while workers sleep on the shared slots they reserved.
    await time.run(
        flip(switch, time, start + 0.5, shared=False),
        *(demand(limiter, time, start + 3, sent) for _ in range(10)),
    )
    # Those slots are honoured, then the fallback goes on at 5/s after them, without a
    # burst of its own: no second holds more than the fleet's burst and rate.
    assert busiest_second(sent) <= 10 + 10


async def test_back_from_the_fallback_shared_slots_follow_the_local_ones() -> None:
    time, switch = VirtualTime(), Switch(shared=False, count=2)
    permits, [limiter] = replicas(1, per_second=10, burst=10, time=time, switch=switch)
    sent: list[float] = []
    start = time()
    await time.run(
        flip(switch, time, start + 2, shared=True),
        *(demand(limiter, time, start + 6, sent) for _ in range(10)),
    )
    assert permits.calls > 0
    # The shared burst comes on top of nothing: the local slots ran out first.
    assert busiest_second(sent) <= 10 + 10


class LateReplies:
    """One replica's view of a shared permit source: every `every`th answer reaches it `late`
    seconds after Redis computed it (its event loop was busy elsewhere)."""

    def __init__(self, source: MemoryPermits, time: VirtualTime, late: float, every: int) -> None:
        self._source = source
        self._time = time
        self._late = late
        self._every = every
        self._answers = 0

    async def grant(self, count: int, resume: bool = False) -> Grant:
        granted = await self._source.grant(count, resume)
        self._answers += 1
        if self._answers % self._every == 0:
            await self._time.sleep(self._late)
        return granted

    async def pause(self, seconds: float) -> None:
        await self._source.pause(seconds)


async def test_a_batch_read_late_does_not_overlap_the_next_replicas_batch() -> None:
    """One replica reads some grants 100 ms late: their slots stay where Redis placed them
    (those passed meanwhile are dropped, not spent in a bunch), so they never land on the
    other replica's next batch. Placed on arrival, they would: 550 in a second of 500/s."""
    time, switch = VirtualTime(), Switch(count=2)
    rate, burst = 500, 50
    permits = MemoryPermits(rate, burst, time, switch)
    late = LateReplies(permits, time, late=0.1, every=3)
    limiters = [
        FleetLimiter(source, switch, rate, burst, clock=time, sleep=time.sleep)
        for source in (late, permits)
    ]
    sent: list[float] = []
    end = time() + 10
    await time.run(*(demand(lim, time, end, sent) for lim in limiters for _ in range(32)))
    steady = [t for t in sent if t > sent[0] + 2]  # after the burst
    # A slot may go up to the staleness bound (50 ms) after its time: at most that much of
    # the rate beyond it in any second.
    assert busiest_second(steady) <= rate * 1.05
    assert len(steady) / (steady[-1] - steady[0]) == pytest.approx(rate, rel=0.02)


async def test_back_from_the_fallback_no_burst_is_granted_on_top() -> None:
    """Two replicas spend the rate between them on their fallbacks; when the store answers
    again, the fleet's burst was spent there: the shared limit resumes at the rate, not with
    a burst on top (which a Redis that kept, or lost, the old state would otherwise grant)."""
    time, switch = VirtualTime(), Switch(count=2)
    rate, burst = 10, 10
    _, limiters = replicas(2, per_second=rate, burst=burst, time=time, switch=switch)
    sent: list[float] = []
    start = time()
    await time.run(
        flip(switch, time, start + 3, shared=False),
        flip(switch, time, start + 6, shared=True),
        *(demand(lim, time, start + 10, sent) for lim in limiters for _ in range(8)),
    )
    # From the fallback's steady pace (its first second follows the shared slots reserved
    # before the switch) across the return to the shared limit. Redis never saw the
    # fallbacks' slots, so each replica's first shared permit may come sooner after its last
    # local one than its share's interval: one permit per replica, no more (21 with a burst).
    switching_back = [t for t in sent if t >= start + 5]
    assert busiest_second(switching_back) <= rate + len(limiters)


async def test_callers_woken_late_by_a_busy_loop_do_not_go_out_in_a_bunch() -> None:
    """The event loop is busy for 300 ms while six callers sleep on slots 50 ms apart: they
    wake together, their slots long passed. Spent now, six requests would go out at once;
    they take the next slots instead, and go out at the rate."""
    time, switch = VirtualTime(), Switch()
    _, [limiter] = replicas(1, per_second=20, burst=1, time=time, switch=switch)
    stalled = False

    async def late_sleep(seconds: float) -> None:
        nonlocal stalled
        await time.sleep(seconds)
        if not stalled and time() > 1001:
            stalled = True
            time.now += 0.3  # the loop was busy elsewhere: every sleeper wakes late

    limiter._sleep = late_sleep
    sent: list[float] = []
    await time.run(*(demand(limiter, time, time() + 3, sent) for _ in range(6)))
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(sent)]
    assert sum(gap < 0.05 - 1e-6 for gap in gaps) <= 1, gaps


async def test_replicas_that_come_back_one_after_the_other_keep_to_the_rate() -> None:
    """Two replicas on their fallbacks (half the rate each) find Redis 2 s apart: the first
    one back must not take the whole shared rate while the other still sends its half, which
    Redis does not see. Until the others have had time to come back, it keeps to its share."""
    time, redis = VirtualTime(), Switch()
    a, b = Switch(shared=False, count=2), Switch(shared=False, count=2)
    rate, burst = 10, 10
    permits = MemoryPermits(rate, burst, time, redis)
    limiters = [
        FleetLimiter(permits, side, rate, burst, clock=time, sleep=time.sleep) for side in (a, b)
    ]
    sent: list[float] = []
    start = time()
    await time.run(
        flip(a, time, start + 3, shared=True),
        flip(b, time, start + 5, shared=True),
        *(demand(lim, time, start + 10, sent) for lim in limiters for _ in range(8)),
    )
    # From the fallbacks' steady pace on; one permit per replica as in the test above.
    assert busiest_second([t for t in sent if t >= start + 2]) <= rate + len(limiters)
