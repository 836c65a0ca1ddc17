"""The pacer's fast path: a request that waits for nothing is cleared without an await, and
only then; everything else goes through the full clearance, with nothing taken twice."""

from __future__ import annotations

from consumer.breaker import REGULAR, CircuitBreaker, State
from consumer.channels import ChannelState
from consumer.concurrency import NO_LEASE, UNLIMITED, ConcurrencyGate, LocalGate
from consumer.outcome import from_response
from consumer.pacer import Pacer
from consumer.ratelimit import LocalLimiter

from .test_lanes import BREAKER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pacer(clock: Clock, gate: ConcurrencyGate = UNLIMITED) -> Pacer:
    limiter = LocalLimiter(10.0, burst=2, clock=clock)  # a permit every 0.1 s
    breaker = CircuitBreaker(3, 30.0, clock=clock)
    return Pacer("a", limiter, gate, breaker, ChannelState(), BREAKER, clock)


def test_a_free_permit_clears_at_once_and_the_rate_still_holds() -> None:
    clock = Clock()
    p = pacer(clock)
    assert p.at_once() == (0.0, NO_LEASE, REGULAR)
    assert p.at_once() is not None  # the burst of two
    assert p.at_once() is None  # the third would go early: nothing taken
    assert p.limiter.free_in() > 0
    clock.now += 0.1
    assert p.at_once() is not None
    assert p.at_once() is None


def test_a_pause_the_receiver_asked_for_is_never_skipped() -> None:
    clock = Clock()
    p = pacer(clock)
    p.learn(from_response(429, "2", "slow down"))
    assert p.at_once() is None
    clock.now += 2.0
    assert p.at_once() is not None


async def test_a_circuit_that_is_not_closed_goes_the_full_way() -> None:
    clock = Clock()
    p = pacer(clock)
    for _ in range(3):
        p.learn(from_response(503, None, "down"))
    assert p.breaker.state is State.OPEN
    assert p.at_once() is None
    assert p.limiter.free_in() == 0  # no permit was taken for it
    assert await p.cleared() is None  # open, not yet due: nothing goes


async def test_a_concurrency_gate_means_no_fast_path() -> None:
    clock = Clock()
    gated = pacer(clock, gate=LocalGate(1))
    assert gated.at_once() is None
    cleared = await gated.cleared()
    assert cleared is not None
    assert cleared[1] is not NO_LEASE  # a real lease, released by the lane after the request
    ungated = pacer(clock)
    ungated.retarget(ungated.limiter, LocalGate(1))
    assert ungated.at_once() is None
