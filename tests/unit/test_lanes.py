"""A channel's lane: retries, the delay path, dead letters, its circuit breaker and parking,
against scripted transports and in-memory sinks."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from consumer.breaker import CircuitBreaker, State
from consumer.catalog import Channel
from consumer.config import CircuitBreakerConfig, RetryConfig
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayedDelivery, DelayPath, MemoryDelaySink, delay_levels
from consumer.delivery import Delivery, Source, Ticket, delivery_id
from consumer.lanes import ChannelLane
from consumer.observer import NO_OBSERVER, Details, Dropped, Observer
from consumer.outcome import Kind, Outcome, from_response

from .fakes import FakeOwner

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

# No schedule: after the quick attempts comes the dead letter.
FAST = RetryConfig(quick_attempts=3, backoff_initial_ms=1, backoff_max_ms=2, schedule_seconds=[])
# Long delays: what reaches the delay path stays there for the whole test.
SCHEDULED = FAST.model_copy(update={"schedule_seconds": [60.0, 120.0]})
BREAKER = SCHEDULED.model_copy(
    update={"circuit_breaker": CircuitBreakerConfig(failures=3, cooldown_seconds=30)}
)
TOPIC = "user-threshold-events"
SERVER_ERROR = from_response(503, None, "status 503")


class ScriptedTransport:
    """Answers with the scripted statuses or outcomes in turn, then keeps the last one."""

    def __init__(self, *answers: int | Outcome) -> None:
        self.answers = list(answers)
        self.attempts: list[tuple[str, int]] = []

    async def send(self, delivery: Delivery) -> Outcome:
        self.attempts.append((delivery.id, delivery.attempts))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Outcome):
            return answer
        return from_response(answer, None, f"status {answer}")


class HangingTransport:
    """Accepts every request and never answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, delivery: Delivery) -> Outcome:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class FailingOnceTransport(ScriptedTransport):
    async def send(self, delivery: Delivery) -> Outcome:
        if not self.attempts:
            self.attempts.append((delivery.id, delivery.attempts))
            raise RuntimeError("bug in a transport")
        return await super().send(delivery)


@pytest.fixture
def channel(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Channel:
    _, catalog = build_catalog([channel_cfg("coupon-system", max_concurrency=1)])
    return catalog.channels["coupon-system"]


def make_delivery(
    channel: Channel,
    owner: FakeOwner,
    offset: int = 99,
    attempts: int = 0,
    rounds: int = 0,
    last_error: Outcome | None = None,
    created_at: float | None = None,
) -> Delivery:
    source = Source(TOPIC, 1, offset)
    delivery = Delivery(
        id=delivery_id(channel.name, [f"e{offset}"]),
        channel=channel,
        campaign_id="double11",
        template_param={"discount": "20%"},
        user_attr=[{"hobby": "game1"}],
        events=[{"event_id": f"e{offset}"}],
        sources=[source],
        tickets=[Ticket(source, 1, owner)],
        attempts=attempts,
        rounds=rounds,
        last_error=last_error,
    )
    if created_at is not None:
        delivery.created_at = created_at
    return delivery


@dataclass
class Harness:
    lane: ChannelLane
    letters: MemoryDeadLetterSink
    delayed: MemoryDelaySink

    @property
    def records(self) -> list[DelayedDelivery]:
        return [record for _, record in self.delayed.written]

    @property
    def topics(self) -> set[str]:
        return {topic for topic, _ in self.delayed.written}


@asynccontextmanager
async def running_lane(
    channel: Channel, transport: object, retry: RetryConfig = FAST, observer: Observer = NO_OBSERVER
) -> AsyncIterator[Harness]:
    letters, delayed = MemoryDeadLetterSink(), MemoryDelaySink()
    dead_letters = DeadLetterWriter(letters)
    delays = DelayPath(delayed, "webhook-retry", delay_levels(retry))
    lane = ChannelLane(
        channel,
        transport,  # type: ignore[arg-type]
        dead_letters,
        delays,
        retry,
        observer=observer,
        rng=random.Random(7),
    )
    lane.start()
    try:
        yield Harness(lane, letters, delayed)
    finally:
        await lane.close()
        await delays.close()
        await dead_letters.close()


# Retries in-process and dead letters


async def test_retryable_then_delivered(channel: Channel, wait_until: WaitUntil) -> None:
    transport = ScriptedTransport(503, 200)
    finished = FakeOwner()
    delivery = make_delivery(channel, finished)
    async with running_lane(channel, transport) as h:
        h.lane.submit(delivery)
        await wait_until(lambda: finished == [99], what="delivery finished")
        assert delivery.attempts == 2
        assert transport.attempts == [(delivery.id, 1), (delivery.id, 2)]
        assert (h.letters.letters, h.delayed.written, h.lane.backlog) == ([], [], 0)


async def test_timeout_is_retried(channel: Channel, wait_until: WaitUntil) -> None:
    timeout = Outcome(Kind.TIMEOUT, retryable=True, message="no answer")
    transport = ScriptedTransport(timeout, timeout, 204)
    finished = FakeOwner()
    async with running_lane(channel, transport) as h:
        h.lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: len(finished) == 1, what="delivery finished")
        assert h.letters.letters == []
    assert [attempt for _, attempt in transport.attempts] == [1, 2, 3]


async def test_permanent_failure_is_dead_lettered_once(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(400)
    finished = FakeOwner()
    delivery = make_delivery(channel, finished)
    async with running_lane(channel, transport, SCHEDULED) as h:
        h.lane.submit(delivery)
        await wait_until(lambda: len(finished) == 1, what="record finished via dead letter")
        assert h.delayed.written == []  # never retried later, schedule or not
    (letter,) = h.letters.letters
    assert letter.delivery_id == delivery.id
    assert letter.channel == "coupon-system"
    assert letter.campaign_id == "double11"
    assert (letter.reason.kind, letter.reason.status) == ("http_status", 400)
    assert letter.limit is None  # permanent: no limit ended it
    assert letter.attempts == 1
    assert letter.events == [{"event_id": "e99"}]
    assert (letter.source.partition, letter.source.offset) == (1, 99)
    assert len(transport.attempts) == 1


async def test_retries_exhausted_after_quick_attempts_without_schedule(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(503)
    finished = FakeOwner()
    async with running_lane(channel, transport) as h:
        h.lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: len(finished) == 1, what="record finished via dead letter")
    (letter,) = h.letters.letters
    assert letter.attempts == FAST.quick_attempts == len(transport.attempts)
    assert (letter.reason.kind, letter.reason.status) == ("http_status", 503)
    assert letter.limit == "schedule"
    assert letter.first_attempt_at is not None
    assert letter.last_attempt_at is not None
    assert letter.first_attempt_at <= letter.last_attempt_at


async def test_transport_exception_does_not_strand_the_delivery(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = FailingOnceTransport(200)
    finished = FakeOwner()
    async with running_lane(channel, transport) as h:
        h.lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: len(finished) == 1, within=1.0, what="delivery handed off")
        assert (h.letters.letters, h.delayed.written) == ([], [])
    assert [attempt for _, attempt in transport.attempts] == [1, 2]


async def test_retry_timers_are_released(channel: Channel, wait_until: WaitUntil) -> None:
    transport = ScriptedTransport(503, 503, 200)
    finished = FakeOwner()
    async with running_lane(channel, transport) as h:
        h.lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: len(finished) == 1, what="delivery finished")
        assert len(h.lane._timers) == 0


# The delay path


async def test_still_failing_after_quick_attempts_goes_to_the_delay_path(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(503)
    finished = FakeOwner()
    delivery = make_delivery(channel, finished)
    async with running_lane(channel, transport, SCHEDULED) as h:
        h.lane.submit(delivery)
        await wait_until(lambda: finished == [99], what="handed to the delay path")
        assert len(transport.attempts) == SCHEDULED.quick_attempts
        assert h.letters.letters == []
        ((topic, record),) = h.delayed.written
    assert topic == "webhook-retry.60s"
    assert (record.delivery_id, record.rounds) == (delivery.id, 1)
    assert record.attempts == SCHEDULED.quick_attempts
    assert record.last_error is not None
    assert (record.last_error.kind, record.last_error.status) == ("http_status", 503)


async def test_back_from_a_delay_one_attempt_then_the_next_delay(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(503)
    finished = FakeOwner()
    delivery = make_delivery(channel, finished, attempts=3, rounds=1, last_error=SERVER_ERROR)
    async with running_lane(channel, transport, SCHEDULED) as h:
        h.lane.submit(delivery)
        await wait_until(lambda: len(finished) == 1, what="handed to the delay path")
        ((topic, record),) = h.delayed.written
    assert transport.attempts == [(delivery.id, 4)]  # same id, the next attempt number
    assert topic == "webhook-retry.120s"
    assert (record.attempts, record.rounds) == (4, 2)


async def test_schedule_used_up_then_dead_letter(channel: Channel, wait_until: WaitUntil) -> None:
    transport = ScriptedTransport(503)
    finished = FakeOwner()
    rounds = len(SCHEDULED.schedule_seconds)
    delivery = make_delivery(channel, finished, attempts=5, rounds=rounds)
    async with running_lane(channel, transport, SCHEDULED) as h:
        h.lane.submit(delivery)
        await wait_until(lambda: len(finished) == 1, what="record finished via dead letter")
        assert h.delayed.written == []
    (letter,) = h.letters.letters
    assert (letter.delivery_id, letter.attempts, letter.rounds) == (delivery.id, 6, rounds)
    assert (letter.reason.kind, letter.reason.status) == ("http_status", 503)
    assert letter.limit == "schedule"
    assert len(transport.attempts) == 1


# The circuit breaker: an open circuit is a reason to wait, not an attempt


def open_circuit(lane: ChannelLane) -> None:
    for _ in range(BREAKER.circuit_breaker.failures):
        lane.breaker.record(failure=True)
    assert lane.breaker.state is State.OPEN


def open_then_cool_down(lane: ChannelLane) -> None:
    """Open the circuit on a clock of the test's own, then move that clock past the cooldown."""
    now = [0.0]
    lane.breaker = CircuitBreaker(3, 30.0, 300.0, clock=lambda: now[0])
    open_circuit(lane)
    now[0] += 30.0


async def test_an_open_circuit_sends_nothing_and_waits_for_the_probe_without_a_round(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(503)
    finished = FakeOwner()
    async with running_lane(channel, transport, BREAKER) as h:
        h.lane.submit(make_delivery(channel, finished, offset=0))  # 3 failed attempts
        await wait_until(lambda: len(finished) == 1, what="first delivery delayed")
        assert h.lane.breaker.state is State.OPEN
        for offset in range(1, 6):
            h.lane.submit(make_delivery(channel, finished, offset=offset))
        await wait_until(lambda: len(finished) == 6, what="the others wait")
        assert len(transport.attempts) == BREAKER.circuit_breaker.failures
        assert h.letters.letters == []
        first, *held = h.records
    assert (first.attempts, first.rounds) == (3, 1)  # its schedule goes on after real failures
    assert [(r.attempts, r.rounds, r.parks) for r in held] == [(0, 0, 0)] * 5
    cooldown = BREAKER.circuit_breaker.cooldown_seconds
    for record in held:  # due just after the probe goes out, not a schedule step later
        wait = record.due_ms / 1000 - time.time()
        assert cooldown * 0.95 < wait <= cooldown * 1.11


async def test_after_the_cooldown_a_probe_closes_the_circuit(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(200)
    finished = FakeOwner()
    async with running_lane(channel, transport, BREAKER) as h:
        open_then_cool_down(h.lane)
        h.lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: len(finished) == 1, what="probe delivered")
        assert len(transport.attempts) == 1
        assert h.lane.breaker.state is State.CLOSED
        assert (h.letters.letters, h.delayed.written) == ([], [])


async def test_a_failed_probe_reopens_and_the_delivery_waits_without_a_round(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(503)
    finished = FakeOwner()
    async with running_lane(channel, transport, BREAKER) as h:
        open_then_cool_down(h.lane)
        h.lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: len(finished) == 1, what="probe failed, delivery waits")
        assert len(transport.attempts) == 1  # its quick retry found the circuit open again
        assert h.lane.breaker.state is State.OPEN
        ((_, record),) = h.delayed.written
        assert (record.attempts, record.rounds) == (1, 0)


async def test_an_open_circuit_keeps_the_last_real_error_on_the_delay_path(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(200)
    finished = FakeOwner()
    delivery = make_delivery(channel, finished, attempts=3, rounds=1, last_error=SERVER_ERROR)
    async with running_lane(channel, transport, BREAKER) as h:
        open_circuit(h.lane)
        h.lane.submit(delivery)
        await wait_until(lambda: len(finished) == 1, what="delayed")
        ((_, record),) = h.delayed.written
    assert transport.attempts == []
    assert record.rounds == 1
    assert record.last_error is not None
    assert (record.last_error.kind, record.last_error.status) == ("http_status", 503)


async def test_a_delivery_held_past_its_maximum_age_is_dead_lettered_with_its_last_error(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport = ScriptedTransport(200)
    finished = FakeOwner()
    old = time.time() - BREAKER.max_age
    delivery = make_delivery(channel, finished, attempts=5, last_error=SERVER_ERROR, created_at=old)
    async with running_lane(channel, transport, BREAKER) as h:
        open_circuit(h.lane)
        h.lane.submit(delivery)
        await wait_until(lambda: len(finished) == 1, what="dead-lettered")
        (letter,) = h.letters.letters
    assert transport.attempts == []
    assert (letter.reason.kind, letter.reason.status, letter.limit) == ("max_age", 503, "max_age")


# Throttling: 429 and Retry-After slow the whole lane and never open the circuit


async def test_throttling_pauses_the_lane_and_does_not_open_the_circuit(
    channel: Channel, wait_until: WaitUntil
) -> None:
    throttled = from_response(429, None, "slow down")
    transport = ScriptedTransport(*[throttled] * 5, 200)
    finished = FakeOwner()
    retry = BREAKER.model_copy(
        update={"quick_attempts": 10, "backoff_initial_ms": 40, "backoff_max_ms": 80}
    )
    async with running_lane(channel, transport, retry) as h:
        h.lane.submit(make_delivery(channel, finished, offset=1))
        # The whole lane pauses, not just this delivery.
        await wait_until(lambda: h.lane.pacer.limiter.paused_for() > 0, what="the lane paused")
        await wait_until(lambda: len(finished) == 1, within=5, what="delivered after the pauses")
        assert h.lane.breaker.state is State.CLOSED  # five 429s, three allowed failures
        assert h.letters.letters == []
    assert len(transport.attempts) == 6


# Isolation: what a lane cannot send in time waits on the delay path, not in memory


async def test_a_hanging_channel_does_not_hold_up_another(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    _, catalog = build_catalog([channel_cfg("stuck"), channel_cfg("healthy")])
    stuck_channel, healthy_channel = catalog.channels["stuck"], catalog.channels["healthy"]
    stuck_done = FakeOwner()
    healthy_done = FakeOwner()
    async with (
        running_lane(stuck_channel, HangingTransport()) as stuck,
        running_lane(healthy_channel, ScriptedTransport(200)) as healthy,
    ):
        for offset in range(5):
            stuck.lane.submit(make_delivery(stuck_channel, stuck_done, offset))
            healthy.lane.submit(make_delivery(healthy_channel, healthy_done, offset))
        await wait_until(lambda: len(healthy_done) == 5, what="healthy deliveries finished")
        assert stuck_done == []


async def test_a_hanging_channel_parks_its_overflow_on_the_delay_path(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    _, catalog = build_catalog([channel_cfg("stuck", max_concurrency=2)])
    channel = catalog.channels["stuck"]
    transport = HangingTransport()
    retry = SCHEDULED.model_copy(update={"max_backlog_seconds": 0.01})
    finished = FakeOwner()
    async with running_lane(channel, transport, retry) as h:
        for offset in range(200):
            h.lane.submit(make_delivery(channel, finished, offset))
        # 2 in the receiver's hands, at most max_concurrency waiting, the rest parked.
        await wait_until(lambda: len(finished) == 196, within=2.0, what="overflow parked")
        assert transport.calls == 2
        assert h.lane.backlog == 2
        assert len(h.records) == 196
        assert {(r.rounds, r.attempts, r.parks) for r in h.records} == {(0, 0, 1)}
        assert h.letters.letters == []


async def test_parking_is_paced_by_what_the_lane_sends(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    """At 10/s with room for 5, the k-th parked delivery is due when the lane will have sent
    the 5 queued and the k-1 parked before it, less half a backlog: it finds room on return."""
    _, catalog = build_catalog(
        [channel_cfg("slow", max_concurrency=1, rate_limit={"per_second": 10})]
    )
    channel = catalog.channels["slow"]
    transport = ScriptedTransport(200)
    retry = SCHEDULED.model_copy(update={"max_backlog_seconds": 0.5})  # 5 deliveries at 10/s
    finished = FakeOwner()
    async with running_lane(channel, transport, retry) as h:
        started = time.time()
        for offset in range(50):
            h.lane.submit(make_delivery(channel, finished, offset))
        await wait_until(lambda: len(finished) == 50, what="sent or parked")
        assert len(transport.attempts) == 5
        assert len(h.records) == 45
        assert {(r.rounds, r.parks) for r in h.records} == {(0, 1)}
    waits = [r.due_ms / 1000 - started for r in h.records]
    assert waits == sorted(waits)
    for k, wait in enumerate(waits):
        expected = max((5 + k) / 10 - 0.25, 1.0)  # at least the shortest park
        assert expected - 0.05 <= wait <= expected + 0.3, (k, wait)


async def test_a_delivery_parked_again_is_booked_behind_the_others_not_beyond(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    """Back from a park to a lane that is full again (a stall, a slower receiver), a delivery
    is booked behind what is parked like any other. Stretching its whole booked wait instead
    brought it back long after the lane had sent everything else and run dry."""
    _, catalog = build_catalog(
        [channel_cfg("slow", max_concurrency=1, rate_limit={"per_second": 10})]
    )
    channel = catalog.channels["slow"]
    retry = SCHEDULED.model_copy(update={"max_backlog_seconds": 0.5})  # 5 deliveries at 10/s
    finished = FakeOwner()
    async with running_lane(channel, ScriptedTransport(200), retry) as h:
        started = time.time()
        for offset in range(20):
            h.lane.submit(make_delivery(channel, finished, offset))
        returned = make_delivery(channel, finished, offset=99)
        returned.parks = 1
        h.lane.submit(returned)
        await wait_until(lambda: len(finished) == 21, what="sent or parked")
    [again] = [r for r in h.records if r.parks == 2]
    expected = (5 + 15) / 10 - 0.25  # behind 5 queued and 15 parked, less half a backlog
    assert expected - 0.05 <= again.due_ms / 1000 - started <= expected + 0.3


async def test_a_delivery_parked_too_often_is_queued_whatever_the_backlog(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    _, catalog = build_catalog(
        [channel_cfg("slow", max_concurrency=1, rate_limit={"per_second": 1})]
    )
    channel = catalog.channels["slow"]
    retry = SCHEDULED.model_copy(update={"max_backlog_seconds": 0.5, "max_parks": 2})
    finished = FakeOwner()
    async with running_lane(channel, HangingTransport(), retry) as h:
        for offset in range(3):
            h.lane.submit(make_delivery(channel, finished, offset))
        await wait_until(lambda: len(h.records) == 2, what="overflow parked")
        veteran = make_delivery(channel, finished, offset=7)
        veteran.parks = 2
        h.lane.submit(veteran)
        assert len(h.records) == 2
        assert h.lane.backlog >= 1


# Revoked partitions: their queued and timer-held work is dropped, not sent twice


async def test_a_delivery_revoked_while_it_waits_for_a_permit_is_not_sent(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    """The revoke grace can run out while a worker waits for its permit (a fallback's small
    share of the rate): the partition's next owner sends the delivery, so this one must not."""
    _, catalog = build_catalog(
        [channel_cfg("paced", max_concurrency=2, rate_limit={"per_second": 2, "burst": 1})]
    )
    channel = catalog.channels["paced"]
    kept, revoked = FakeOwner(), FakeOwner()
    dropped: list[Delivery] = []

    def heard(details: Details) -> None:
        if isinstance(details, Dropped):
            dropped.append(details.delivery)

    transport = ScriptedTransport(200)
    async with running_lane(channel, transport, observer=Observer([heard])) as h:
        h.lane.submit(make_delivery(channel, kept, offset=1))  # the burst: sent at once
        waiting = make_delivery(channel, revoked, offset=2)  # its permit comes 0.5 s later
        h.lane.submit(waiting)
        await wait_until(lambda: kept == [1], what="the first delivery sent")
        revoked.revoked = True
        await wait_until(lambda: dropped == [waiting], within=5, what="the waiting one dropped")
    assert [d for d, _ in transport.attempts] == [make_delivery(channel, kept, 1).id]
    assert revoked == []  # nothing of it finished: its next owner redoes it


async def test_work_of_a_revoked_partition_is_dropped_not_sent(
    channel: Channel, wait_until: WaitUntil
) -> None:
    revoked = FakeOwner()
    kept = FakeOwner()

    class RevokingTransport(ScriptedTransport):
        async def send(self, delivery: Delivery) -> Outcome:
            outcome = await super().send(delivery)
            revoked.revoked = True  # the revoke grace runs out while this request is out
            return outcome

    transport = RevokingTransport(503, 200)
    async with running_lane(channel, transport) as h:
        waiting = make_delivery(channel, revoked, offset=1)
        queued = make_delivery(channel, revoked, offset=2)
        h.lane.submit(waiting)  # fails once, then waits on a retry timer
        h.lane.submit(queued)  # queued behind it (one worker)
        h.lane.submit(make_delivery(channel, kept, offset=3))
        await wait_until(lambda: kept == [3], what="the owned delivery sent")
        await wait_until(lambda: not h.lane._timers, what="the retry timer fired")
    assert [d for d, _ in transport.attempts] == [waiting.id, make_delivery(channel, kept, 3).id]
    assert revoked == []  # nothing of it finished: its next owner redoes it
    assert (h.letters.letters, h.delayed.written) == ([], [])
