"""Stale triggers: one rule (outcome.deadline, outcome.expired) applied at intake, before each
attempt, after a delay topic and by `dlq replay`; clock skew counted and read as now."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from consumer.attributes import MemoryAttributeStore
from consumer.catalog import Catalog, expire_after
from consumer.config import RetryConfig
from consumer.deadletter import (
    DeadLetter,
    DeadLetterWriter,
    MemoryDeadLetterSink,
    Reason,
    SourceRef,
)
from consumer.delaypath import (
    EXPIRES_HEADER,
    DelayedDelivery,
    DelayPath,
    MemoryDelaySink,
    delay_levels,
    headers_for,
)
from consumer.delivery import Delivery, Source, Ticket
from consumer.dispatcher import EXPIRY_HEADER, IGNORE_EXPIRY, Dispatcher
from consumer.dlq.replay import _Limits, _refusal
from consumer.lanes import ChannelLane
from consumer.observer import Details, Observer, OccurredInFuture
from consumer.outcome import GiveUp, Kind, Outcome, deadline, expired
from consumer.redelivery import Redelivery

from .fakes import FakeOwner, Record, RecordingLane

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

TOPIC = "user-threshold-events"
NOW = 1_800_000_000.0


def test_the_rule() -> None:
    assert deadline(NOW - 100, None, NOW) is None  # no limit: never stale
    assert deadline(NOW - 100, 60, NOW) == NOW - 40
    assert deadline(NOW + 3600, 60, NOW) == NOW + 60  # ahead of our clock: counts from now
    assert expired(None, NOW) is None
    assert expired(NOW + 1, NOW) is None
    stale = expired(NOW - 40, NOW)
    assert isinstance(stale, GiveUp)
    assert stale.reason.kind is Kind.EXPIRED
    assert not stale.reason.retryable
    assert stale.limit is None
    assert stale.reason.message == "not sent: 40 s past its freshness limit (expire_after_seconds)"
    assert expired(NOW, NOW) is not None  # at the deadline it is stale


def test_the_shorter_of_the_campaigns_and_the_channels_limit_holds(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    channels = [
        channel_cfg("push", template_params={}, expire_after_seconds=600),
        channel_cfg("crm", template_params={}),
        channel_cfg("sms", template_params={}, expire_after_seconds=30),
    ]
    campaigns = [
        {"id": "cart", "channels": ["push", "crm", "sms"], "expire_after_seconds": 300},
        {"id": "loose", "channels": ["push", "crm"]},
    ]
    _, catalog = build_catalog(channels, campaigns)
    limits = {
        (campaign, route.channel.name): route.expire_after
        for campaign, routes in catalog.routes.items()
        for route in routes
    }
    assert limits == {
        ("cart", "push"): 300,
        ("cart", "crm"): 300,
        ("cart", "sms"): 30,
        ("loose", "push"): 600,
        ("loose", "crm"): None,
    }
    assert expire_after(None, None) is None


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat()


def event(event_id: str, user: str, campaign: str, occurred: float) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user,
        "campaign_id": campaign,
        "occurred_at": iso(occurred),
    }


def record(offset: int, document: dict[str, Any], headers: tuple[Any, ...] = ()) -> Record:
    return Record(TOPIC, 0, offset, json.dumps(document).encode(), headers=headers)


@pytest.fixture
def catalog(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Catalog:
    channels = [
        channel_cfg("push", template_params={}, max_concurrency=1),
        channel_cfg("digest", template_params={}, batch={"max_users": 10, "linger_ms": 600_000}),
    ]
    campaigns = [
        {"id": "cart", "channels": ["push", "digest"], "expire_after_seconds": 60},
        {"id": "always", "channels": ["push"]},
    ]
    return build_catalog(channels, campaigns)[1]


async def test_intake_gives_each_delivery_its_deadline_and_counts_clock_skew(
    catalog: Catalog,
) -> None:
    lanes = {name: RecordingLane() for name in catalog.channels}
    seen: list[Details] = []
    dispatcher = Dispatcher(
        catalog,
        MemoryAttributeStore(),
        lanes,
        DeadLetterWriter(MemoryDeadLetterSink()),
        Observer([seen.append]),
    )
    now = time.time()
    await dispatcher.dispatch(
        [
            record(1, event("fresh", "u1", "cart", now - 10)),
            record(2, event("ahead", "u1", "cart", now + 7200)),  # a producer's clock is off
            record(3, event("unlimited", "u1", "always", now - 86400)),
            record(
                4, event("replayed", "u1", "cart", now - 3600), ((EXPIRY_HEADER, IGNORE_EXPIRY),)
            ),
        ],
        FakeOwner(),
    )
    fresh, ahead, unlimited, replayed = lanes["push"].deliveries
    assert fresh.expires_at == pytest.approx(now + 50, abs=2)
    assert ahead.expires_at == pytest.approx(now + 60, abs=2)  # counted from now
    assert unlimited.expires_at is None
    assert replayed.expires_at is None  # `dlq replay --ignore-expiry` said so
    assert [d for d in seen if isinstance(d, OccurredInFuture)] == [
        OccurredInFuture(pytest.approx(7200, abs=2))
    ]


async def test_a_stale_event_joins_no_batch(catalog: Catalog) -> None:
    lanes = {name: RecordingLane() for name in catalog.channels}
    dispatcher = Dispatcher(
        catalog, MemoryAttributeStore(), lanes, DeadLetterWriter(MemoryDeadLetterSink())
    )
    now = time.time()
    await dispatcher.dispatch(
        [
            record(1, event("stale", "u1", "cart", now - 120)),
            record(2, event("fresh", "u2", "cart", now)),
        ],
        FakeOwner(),
    )
    # Alone, straight to its lane (which dead-letters it); the fresh one lingers in its batch.
    (stale,) = lanes["digest"].deliveries
    assert [e["event_id"] for e in stale.events] == ["stale"]
    assert stale.expires_at is not None
    assert stale.expires_at < now
    dispatcher.flush()
    (_, batch) = lanes["digest"].deliveries
    assert [e["event_id"] for e in batch.events] == ["fresh"]
    assert batch.expires_at == pytest.approx(now + 60, abs=2)


class CountingTransport:
    """Answers 200; while `gate` is set, each request first waits for it to open."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate: asyncio.Event | None = None

    async def send(self, delivery: Delivery) -> Outcome:
        self.sent.append(delivery.id)
        if self.gate is not None:
            await self.gate.wait()
        return Outcome(Kind.DELIVERED, retryable=False, status=200)


@asynccontextmanager
async def lane_for(
    catalog: Catalog, transport: CountingTransport
) -> AsyncIterator[tuple[ChannelLane, MemoryDeadLetterSink, MemoryDelaySink]]:
    letters, delayed = MemoryDeadLetterSink(), MemoryDelaySink()
    retry = RetryConfig(quick_attempts=1, schedule_seconds=[60])
    writer = DeadLetterWriter(letters)
    delays = DelayPath(delayed, "retry", delay_levels(retry))
    lane = ChannelLane(
        catalog.channels["push"], transport, writer, delays, retry, rng=random.Random(1)
    )
    lane.start()
    try:
        yield lane, letters, delayed
    finally:
        await lane.close()
        await delays.close()
        await writer.close()


def delivery(catalog: Catalog, owner: FakeOwner, expires_at: float | None) -> Delivery:
    source = Source(TOPIC, 0, len(owner) + 10)
    return Delivery(
        id=f"d-{expires_at}",
        channel=catalog.channels["push"],
        campaign_id="cart",
        template_param={},
        user_attr=[],
        events=[{"event_id": "e"}],
        sources=[source],
        tickets=[Ticket(source, 1, owner)],
        expires_at=expires_at,
    )


async def test_a_lane_dead_letters_a_stale_delivery_without_a_request(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    transport = CountingTransport()
    owner = FakeOwner()
    async with lane_for(catalog, transport) as (lane, letters, delayed):
        lane.submit(delivery(catalog, owner, time.time() - 1))
        lane.submit(delivery(catalog, owner, time.time() + 60))
        lane.submit(delivery(catalog, owner, None))
        await wait_until(lambda: len(owner) == 3, what="all three finished")
    assert len(transport.sent) == 2
    (letter,) = letters.letters
    assert letter.reason.kind == "expired"
    assert letter.attempts == 0
    assert delayed.written == []


async def test_a_delivery_that_goes_stale_in_the_queue_is_not_sent(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    transport = CountingTransport()
    transport.gate = asyncio.Event()
    owner = FakeOwner()
    async with lane_for(catalog, transport) as (lane, letters, _):
        ahead = delivery(catalog, owner, None)
        lane.submit(ahead)  # takes the lane's one worker, and holds it
        await wait_until(lambda: transport.sent == [ahead.id], what="the first request out")
        queued = delivery(catalog, owner, time.time() + 60)
        lane.submit(queued)
        assert lane.backlog == 1
        queued.expires_at = time.time() - 1  # it waited in the queue past its deadline
        transport.gate.set()
        await wait_until(lambda: len(owner) == 2, what="both finished")
    assert transport.sent == [ahead.id]
    assert [letter.reason.kind for letter in letters.letters] == ["expired"]


def test_the_deadline_travels_on_the_delay_path_and_in_a_header(catalog: Catalog) -> None:
    owner = FakeOwner()
    original = delivery(catalog, owner, NOW + 30)
    record = DelayedDelivery.of(original, due_ms=0)
    assert record.expires_at == NOW + 30
    assert (EXPIRES_HEADER, str(int((NOW + 30) * 1000)).encode()) in headers_for(record, "g")
    back = DelayedDelivery.model_validate_json(record.model_dump_json()).to_delivery(catalog)
    assert back is not None
    assert back.expires_at == NOW + 30
    never = DelayedDelivery.of(delivery(catalog, owner, None), due_ms=0)
    assert not any(name == EXPIRES_HEADER for name, _ in headers_for(never, "g"))
    # Records written before expiry existed have no deadline: never stale.
    older = json.loads(never.model_dump_json())
    del older["expires_at"]
    assert DelayedDelivery.model_validate(older).expires_at is None


async def test_a_stale_delay_record_is_not_held_for_an_open_circuit(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    lane = RecordingLane()
    lane.held = 30.0  # the circuit is open
    letters, delayed = MemoryDeadLetterSink(), MemoryDelaySink()
    delays = DelayPath(delayed, "retry", (5.0,))
    redelivery = Redelivery(
        catalog,
        {"push": lane, "digest": RecordingLane()},
        DeadLetterWriter(letters),
        delays,
        "g",
        3600.0,
    )
    owner = FakeOwner()
    fresh = DelayedDelivery.of(delivery(catalog, owner, time.time() + 600), due_ms=0)
    stale = DelayedDelivery.of(delivery(catalog, owner, time.time() - 1), due_ms=0)
    records = [
        Record(
            "retry.5s", 0, offset, r.model_dump_json().encode(), headers=tuple(headers_for(r, "g"))
        )
        for offset, r in enumerate((fresh, stale))
    ]
    await redelivery.dispatch(records, FakeOwner())
    # The fresh one waits again for the probe, undecoded; the stale one goes to its lane,
    # which dead-letters it.
    assert [d.expires_at for d in lane.deliveries] == [stale.expires_at]
    await wait_until(lambda: len(delayed.written) == 1, what="the fresh one written back")
    assert delayed.written[0][1].expires_at == fresh.expires_at
    await delays.close()


def letter(
    campaign: str | None, channel: str | None, occurred: float, delivery_id: str | None = "d"
) -> DeadLetter:
    ref = SourceRef(topic=TOPIC, partition=0, offset=1)
    return DeadLetter(
        delivery_id=delivery_id if channel else None,
        channel=channel,
        campaign_id=campaign,
        events=[{"event_id": "e", "occurred_at": iso(occurred)}],
        reason=Reason(kind="http_status", status=503),
        attempts=3,
        first_attempt_at=None,
        last_attempt_at=None,
        dead_lettered_at=datetime.now(UTC),
        source=ref,
        sources=[ref],
    )


def test_replay_judges_letters_by_todays_limits(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    config, _ = build_catalog(
        [
            channel_cfg("push", template_params={}),
            channel_cfg("sms", template_params={}, expire_after_seconds=30),
        ],
        [
            {"id": "cart", "channels": ["push", "sms"], "expire_after_seconds": 3600},
            {"id": "any", "channels": ["push"]},
        ],
    )
    limits = _Limits(config)
    now = datetime.now(UTC).timestamp()
    channels = {"push", "sms"}
    hour_old = now - 3700

    def refusal(dead: DeadLetter) -> str | None:
        return _refusal(dead, channels, limits.deadline(dead))

    assert refusal(letter("cart", "push", hour_old)) == "expired"
    assert refusal(letter("cart", "push", now - 60)) is None
    assert refusal(letter("cart", "sms", now - 60)) == "expired"  # the channel's 30 s
    assert refusal(letter("any", "push", hour_old)) is None  # no limit
    assert refusal(letter("gone", "sms", now - 60)) == "expired"  # campaign gone: channel's
    # A record that never became a delivery: stale only once stale for every channel.
    assert refusal(letter("cart", None, now - 60)) is None
    assert refusal(letter("cart", None, hour_old)) == "expired"
    assert refusal(letter("any", None, hour_old)) is None
    assert refusal(letter("unknown", None, hour_old)) is None
    assert limits.deadline(letter("cart", "push", now + 7200)) == pytest.approx(now + 3600, abs=2)
    assert _refusal(letter("cart", "push", hour_old), channels, None) is None  # --ignore-expiry
