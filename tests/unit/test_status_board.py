"""The status page's model, fed synthetic details under a clock the test moves."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest

from consumer.catalog import Channel
from consumer.delivery import Delivery
from consumer.hooks.status import LATENCY_BOUNDS, StatusBoard, quantile
from consumer.observer import (
    Attempted,
    AttributesApplied,
    AttributesProgress,
    ChannelStateChanged,
    CircuitChanged,
    CommitFailed,
    Committed,
    Consumed,
    Delayed,
    Delivered,
    GaveUp,
    Held,
    InputLag,
    LaneLoad,
    OccurredInFuture,
    PartitionsOwned,
)
from consumer.outcome import Kind, Limit, Outcome, Wait, from_response
from tests.support.clock import ManualClock

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory

OK = from_response(200, None, "")
DOWN = from_response(503, None, "")


@pytest.fixture
def coupon(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Channel:
    _, catalog = build_catalog([channel_cfg("coupon-system")])
    return catalog.channels["coupon-system"]


def delivery(channel: Channel) -> Delivery:
    return Delivery("d", channel, "c", {}, [], [], [], attempts=1)


def make_board(clock: ManualClock) -> StatusBoard:
    return StatusBoard(["coupon-system", "push-service"], clock=clock, wall_clock=lambda: 5000.0)


def test_the_last_minute_per_channel(coupon: Channel) -> None:
    clock = ManualClock()
    board = make_board(clock)
    for i in range(100):
        clock.now = 1000 + i * 0.5  # 100 attempts over 50 s
        board(Attempted(delivery(coupon), OK if i % 10 else DOWN, 0.02, 0.0))
        if i % 10:
            board(Delivered(delivery(coupon)))
    board(Delayed(delivery(coupon), 5.0, Wait.RETRY))
    board(Delayed(delivery(coupon), 2.0, Wait.PARKED))
    board(Held("coupon-system", 9.0))
    coupon_status, push_status = board.snapshot().channels
    assert coupon_status.name == "coupon-system"
    assert (coupon_status.attempts, coupon_status.delivered) == (100, 90)
    assert coupon_status.success_rate == pytest.approx(0.9)
    assert (coupon_status.retried, coupon_status.waited) == (1, 2)
    assert coupon_status.last_success == 5000.0
    assert coupon_status.p50 is not None
    assert 0.01 < coupon_status.p50 <= 0.025  # inside the bucket that holds 0.02
    assert push_status.attempts == 0
    assert push_status.success_rate is None
    assert push_status.p50 is None
    assert push_status.last_success is None


def test_seconds_older_than_a_minute_drop_out(coupon: Channel) -> None:
    clock = ManualClock()
    board = make_board(clock)
    board(Attempted(delivery(coupon), OK, 0.02, 0.0))
    clock.now += 30
    board(Attempted(delivery(coupon), OK, 0.02, 0.0))
    assert board.snapshot().channels[0].attempts == 2
    clock.now += 31
    assert board.snapshot().channels[0].attempts == 1
    clock.now += 60
    assert board.snapshot().channels[0].attempts == 0


def test_memory_is_sixty_buckets_however_long_it_runs(coupon: Channel) -> None:
    clock = ManualClock()
    board = make_board(clock)
    for second in range(10_000):
        clock.now = 1000 + second
        board(Attempted(delivery(coupon), OK, 0.02, 0.0))
    assert len(board._channels["coupon-system"].ring._buckets) == 60
    assert board.snapshot().channels[0].attempts == 60


def test_now_states_dead_letters_and_partitions(coupon: Channel) -> None:
    clock = ManualClock()
    board = make_board(clock)
    board(LaneLoad("coupon-system", 12, 3))
    board(CircuitChanged("push-service", "open", 5, 30.0))
    board(GaveUp("coupon-system", delivery(coupon), DOWN, Limit.SCHEDULE))
    board(GaveUp("coupon-system", delivery(coupon), DOWN, Limit.SCHEDULE))
    board(GaveUp(None, None, Outcome(Kind.INVALID_EVENT, retryable=False), None))
    board(GaveUp("gone", None, Outcome(Kind.UNKNOWN_CHANNEL, retryable=False), None))
    board(LaneLoad("not-configured", 1, 1))
    board(PartitionsOwned(frozenset({2, 0}), assigned=True))
    board(InputLag(((0, 15),)))
    board(Consumed("input", 500))
    board(Consumed("delay", 20))
    board(Committed(0.01, 2))
    board(CommitFailed(0.5, "x"))
    snap = board.snapshot()
    coupon_status, push_status = snap.channels
    assert (coupon_status.queued, coupon_status.in_flight) == (12, 3)
    assert coupon_status.dead_letters == (("http_status", 2),)
    assert (coupon_status.circuit, push_status.circuit) == ("closed", "open")
    assert snap.unrouted_dead_letters == (("invalid_event", 1), ("unknown_channel", 1))
    assert [(p.partition, p.lag) for p in snap.partitions] == [(0, 15), (2, None)]
    assert (snap.consumed_input, snap.consumed_delay, snap.commits) == (500, 20, 1)
    assert snap.commit_failures == 1
    board(PartitionsOwned(frozenset({2}), assigned=False))
    board(InputLag(((0, 99), (2, 4))))  # a late figure for a partition gone is ignored
    assert [(p.partition, p.lag) for p in board.snapshot().partitions] == [(2, 4)]


def test_expired_deliveries_and_events_ahead_of_the_clock_are_counted(coupon: Channel) -> None:
    board = make_board(ManualClock())
    stale = Outcome(Kind.EXPIRED, retryable=False, message="not sent")
    board(GaveUp("coupon-system", delivery(coupon), stale, None))
    board(GaveUp("coupon-system", delivery(coupon), stale, None))
    board(OccurredInFuture(7200.0))
    snap = board.snapshot()
    assert snap.expired == 2
    assert snap.events_in_future == 1
    assert snap.channels[0].dead_letters == (("expired", 2),)
    assert snap.attributes is None  # no attributes topic configured


def test_the_attributes_follower(coupon: Channel) -> None:
    clock = ManualClock()
    board = StatusBoard(["coupon-system"], clock=clock, attributes_topic="users")
    assert board.snapshot().attributes is not None
    board(AttributesProgress(records=10, lag=990, caught_up=False))
    board(AttributesApplied(8, 1, 1, (("not_json", 2),)))
    clock.now += 30
    board(AttributesApplied(4, 0, 0, (("not_json", 1), ("too_large", 1))))
    board(AttributesProgress(records=1_000, lag=0, caught_up=True))
    status = board.snapshot().attributes
    assert status is not None
    assert (status.topic, status.caught_up, status.lag) == ("users", True, 0)
    assert (status.written, status.superseded) == (13, 1)
    assert status.skipped == (("not_json", 3), ("too_large", 1))
    clock.now += 45  # the first batch is more than a minute ago now
    status = board.snapshot().attributes
    assert status is not None
    assert (status.written, status.superseded) == (4, 0)
    assert status.skipped == (("not_json", 3), ("too_large", 1))  # since start


def test_uptime_follows_the_clock() -> None:
    clock = ManualClock()
    board = make_board(clock)
    clock.now += 125.5
    assert board.snapshot().uptime == 125.5


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, [0, 0, 0, 10] + [0] * 12, 0.0075),  # the middle of (0.005, 0.01]
        (0.99, [0, 0, 0, 10] + [0] * 12, 0.00995),
        (0.5, [10] + [0] * 15, 0.0005),
        (0.5, [0] * 15 + [3], 60.0),  # beyond the last bound: the last bound
        (0.5, [5, 0, 0, 0, 0, 0, 0, 0, 0, 5] + [0] * 6, 0.001),
    ],
)
def test_quantile(q: float, counts: list[int], expected: float) -> None:
    assert len(counts) == len(LATENCY_BOUNDS) + 1
    assert quantile(q, counts) == pytest.approx(expected)


def test_quantile_of_nothing_is_nan() -> None:
    assert math.isnan(quantile(0.5, [0] * (len(LATENCY_BOUNDS) + 1)))


def test_a_disabled_channel_shows_who_when_and_why_until_enabled(coupon: Channel) -> None:
    board = make_board(ManualClock())
    board(ChannelStateChanged("coupon-system", True, "ops@host", "maintenance", 1_794_355_200.0))
    [status] = [c for c in board.snapshot().channels if c.name == "coupon-system"]
    assert status.disabled == "by ops@host at 2026-11-11 00:00:00 UTC: maintenance"
    board(ChannelStateChanged("coupon-system", False, "ops@host", "back", 1_794_355_260.0))
    [status] = [c for c in board.snapshot().channels if c.name == "coupon-system"]
    assert status.disabled is None
