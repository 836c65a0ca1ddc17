"""A channel's lane: retries, dead letters and completion, against a scripted transport."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest

from consumer.catalog import Channel
from consumer.config import RetryConfig
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delivery import Delivery, Source, Ticket, delivery_id
from consumer.lanes import ChannelLane
from consumer.outcome import Kind, Outcome, from_response

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

FAST = RetryConfig(quick_attempts=3, backoff_initial_ms=1, backoff_max_ms=2, schedule_seconds=[])
SOURCE = Source("user-threshold-events", 1, 99)


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
    async def send(self, delivery: Delivery) -> Outcome:
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


def make_delivery(channel: Channel, finished: list[Source]) -> Delivery:
    return Delivery(
        id=delivery_id(channel.name, ["e1"]),
        channel=channel,
        campaign_id="double11",
        template_param={"discount": "20%"},
        user_attr=[{"hobby": "game1"}],
        events=[{"event_id": "e1"}],
        sources=[SOURCE],
        tickets=[Ticket(SOURCE, 1, finished.append)],
    )


@asynccontextmanager
async def running_lane(
    channel: Channel, transport: object, sink: MemoryDeadLetterSink
) -> AsyncIterator[ChannelLane]:
    lane = ChannelLane(channel, transport, DeadLetterWriter(sink), FAST, random.Random(7))  # type: ignore[arg-type]
    lane.start()
    try:
        yield lane
    finally:
        await lane.close()


async def test_retryable_then_delivered(channel: Channel, wait_until: WaitUntil) -> None:
    transport, sink = ScriptedTransport(503, 200), MemoryDeadLetterSink()
    finished: list[Source] = []
    delivery = make_delivery(channel, finished)
    async with running_lane(channel, transport, sink) as lane:
        lane.submit(delivery)
        await wait_until(lambda: finished == [SOURCE], what="delivery finished")
        assert delivery.attempts == 2
        assert transport.attempts == [(delivery.id, 1), (delivery.id, 2)]
        assert sink.letters == []
        assert lane.in_flight == 0


async def test_timeout_is_retried(channel: Channel, wait_until: WaitUntil) -> None:
    timeout = Outcome(Kind.TIMEOUT, retryable=True, message="no answer")
    transport = ScriptedTransport(timeout, timeout, 204)
    finished: list[Source] = []
    async with running_lane(channel, transport, MemoryDeadLetterSink()) as lane:
        lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: finished == [SOURCE], what="delivery finished")
    assert [attempt for _, attempt in transport.attempts] == [1, 2, 3]


async def test_permanent_failure_is_dead_lettered_once(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport, sink = ScriptedTransport(400), MemoryDeadLetterSink()
    finished: list[Source] = []
    delivery = make_delivery(channel, finished)
    async with running_lane(channel, transport, sink) as lane:
        lane.submit(delivery)
        await wait_until(lambda: finished == [SOURCE], what="record finished via dead letter")
        assert lane.in_flight == 0
    (letter,) = sink.letters
    assert letter.delivery_id == delivery.id
    assert letter.channel == "coupon-system"
    assert letter.campaign_id == "double11"
    assert (letter.reason.kind, letter.reason.status) == ("http_status", 400)
    assert letter.attempts == 1
    assert letter.events == [{"event_id": "e1"}]
    assert (letter.source.partition, letter.source.offset) == (1, 99)
    assert len(transport.attempts) == 1


async def test_retries_exhausted_after_quick_attempts(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport, sink = ScriptedTransport(503), MemoryDeadLetterSink()
    finished: list[Source] = []
    async with running_lane(channel, transport, sink) as lane:
        lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: finished == [SOURCE], what="record finished via dead letter")
    (letter,) = sink.letters
    assert letter.attempts == FAST.quick_attempts == len(transport.attempts)
    assert (letter.reason.kind, letter.reason.status) == ("http_status", 503)
    assert letter.first_attempt_at is not None
    assert letter.last_attempt_at is not None
    assert letter.first_attempt_at <= letter.last_attempt_at


async def test_a_hanging_channel_does_not_hold_up_another(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    _, catalog = build_catalog([channel_cfg("stuck"), channel_cfg("healthy")])
    finished: list[Source] = []
    sink = MemoryDeadLetterSink()
    async with (
        running_lane(catalog.channels["stuck"], HangingTransport(), sink) as stuck,
        running_lane(catalog.channels["healthy"], ScriptedTransport(200), sink) as healthy,
    ):
        for _ in range(5):
            stuck.submit(make_delivery(catalog.channels["stuck"], finished))
        for _ in range(5):
            healthy.submit(make_delivery(catalog.channels["healthy"], finished))
        await wait_until(lambda: len(finished) == 5, what="healthy deliveries finished")
        assert healthy.in_flight == 0
        assert stuck.in_flight == 5


async def test_transport_exception_does_not_strand_the_delivery(
    channel: Channel, wait_until: WaitUntil
) -> None:
    transport, sink = FailingOnceTransport(200), MemoryDeadLetterSink()
    finished: list[Source] = []
    async with running_lane(channel, transport, sink) as lane:
        lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: finished == [SOURCE], within=1.0, what="delivery handed off")


async def test_retry_timers_are_released(channel: Channel, wait_until: WaitUntil) -> None:
    transport = ScriptedTransport(503, 503, 200)
    finished: list[Source] = []
    async with running_lane(channel, transport, MemoryDeadLetterSink()) as lane:
        lane.submit(make_delivery(channel, finished))
        await wait_until(lambda: finished == [SOURCE], what="delivery finished")
        assert len(lane._timers) == 0
