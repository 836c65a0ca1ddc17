"""Delay topics: their names, the delayed-delivery record, and durable writing."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import orjson
import pytest

from consumer.catalog import Catalog
from consumer.config import RetryConfig
from consumer.delaypath import (
    DUE_HEADER,
    DelayedDelivery,
    DelayPath,
    MemoryDelaySink,
    delay_topic,
    delay_topics,
    due_ms_of,
    parse_delayed,
)
from consumer.delivery import Delivery, Source, delivery_id
from consumer.handoff import Handoff
from consumer.outcome import Delay, Kind, Outcome, decide, from_response

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

SOURCES = [Source("user-threshold-events", 2, 40), Source("user-threshold-events", 0, 7)]


@pytest.fixture
def catalog(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Catalog:
    return build_catalog([channel_cfg("crm")])[1]


def failed_delivery(catalog: Catalog) -> Delivery:
    return Delivery(
        id=delivery_id("crm", ["e1", "e2"]),
        channel=catalog.channels["crm"],
        campaign_id="double11",
        template_param={"discount": "20%", "campaignType": "festival"},
        user_attr=[{"hobby": "game1", "birthday": "1990-01-01"}, {"hobby": None}],
        events=[{"event_id": "e1", "user_id": "u1"}, {"event_id": "e2", "user_id": "u2"}],
        sources=list(SOURCES),
        attempts=4,
        rounds=1,
        first_attempt_at=1_700_000_000.25,
        last_attempt_at=1_700_000_305.5,
        last_error=from_response(503, None, "maintenance"),
    )


@pytest.mark.parametrize(
    ("seconds", "name"),
    [(5, "webhook-retry-5s"), (300.0, "webhook-retry-300s"), (1.5, "webhook-retry-1500ms")],
)
def test_delay_topic_names(seconds: float, name: str) -> None:
    assert delay_topic("webhook-retry", seconds) == name


def test_delay_topics_cover_each_distinct_delay_and_parking(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    config, _ = build_catalog(
        [channel_cfg()],
        kafka={"retry_topic_prefix": "hooks-later"},
        retry={"schedule_seconds": [1, 2.5, 2.5, 60]},
    )
    assert delay_topics(config) == ["hooks-later-1s", "hooks-later-2500ms", "hooks-later-60s"]
    assert delay_topic("hooks-later", config.retry.park_seconds) in delay_topics(config)


def test_without_a_schedule_there_is_still_a_topic_for_parking(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    config, _ = build_catalog([channel_cfg()], retry={"schedule_seconds": []})
    assert delay_topics(config) == [delay_topic("webhook-retry", config.retry.park_seconds)]


def test_a_delayed_delivery_comes_back_unchanged(catalog: Catalog) -> None:
    delivery = failed_delivery(catalog)
    record = DelayedDelivery.of(delivery, due_ms=1_700_000_605_500)
    decoded = parse_delayed(record.model_dump_json().encode())
    assert isinstance(decoded, DelayedDelivery)
    again = decoded.to_delivery(catalog)
    assert again is not None
    assert again.id == delivery.id
    assert again.channel is catalog.channels["crm"]
    assert again.campaign_id == "double11"
    assert (again.attempts, again.rounds) == (4, 1)
    assert dict(again.template_param) == dict(delivery.template_param)
    assert again.user_attr == delivery.user_attr
    assert again.events == delivery.events
    assert again.sources == SOURCES
    assert (again.first_attempt_at, again.last_attempt_at) == (1_700_000_000.25, 1_700_000_305.5)
    assert again.last_error is not None
    assert (again.last_error.kind, again.last_error.status) == (Kind.HTTP_STATUS, 503)
    assert again.last_error.message == "maintenance"
    assert again.tickets == []  # the redelivery attaches its own


def test_a_delayed_delivery_keeps_its_due_time_and_no_secret(catalog: Catalog) -> None:
    encoded = DelayedDelivery.of(failed_delivery(catalog), due_ms=123).model_dump_json()
    assert orjson.loads(encoded)["due_ms"] == 123
    assert catalog.channels["crm"].secret.reveal() not in encoded


def test_a_channel_no_longer_configured_gives_no_delivery(
    catalog: Catalog, channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    record = DelayedDelivery.of(failed_delivery(catalog), due_ms=0)
    _, today = build_catalog([channel_cfg("coupon-system")])
    assert record.to_delivery(today) is None


def test_due_time_is_read_from_the_header() -> None:
    headers = [("channel", b"crm"), (DUE_HEADER, b"1700000000123")]
    assert due_ms_of(headers) == 1_700_000_000_123
    assert due_ms_of([("channel", b"crm")]) is None
    assert due_ms_of(None) is None
    assert due_ms_of([(DUE_HEADER, b"soon")]) is None


@pytest.mark.parametrize("value", [None, b"", b"{oops", b"[1, 2]", b'{"delivery_id": "x"}'])
def test_garbage_is_reported_not_raised(value: bytes | None) -> None:
    result = parse_delayed(value)
    assert isinstance(result, str)
    assert result.startswith("not a delayed delivery")


class FlakyDelaySink(MemoryDelaySink):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def write(self, topic: str, record: DelayedDelivery) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        await super().write(topic, record)


async def test_submit_writes_to_the_level_topic_and_hands_off_once_durable(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    sink = FlakyDelaySink(failures=2)
    path = DelayPath(sink, "webhook-retry", Handoff(retry_seconds=0.001))
    written_at_hand_off: list[int] = []
    before = time.time()
    path.submit(
        failed_delivery(catalog),
        Delay(seconds=42.0, level=30.0),
        lambda: written_at_hand_off.append(len(sink.written)),
    )
    after = time.time()
    assert written_at_hand_off == []
    await wait_until(lambda: written_at_hand_off != [], what="delay record written")
    assert written_at_hand_off == [1]
    assert sink.failures == 0
    ((topic, record),) = sink.written
    assert topic == "webhook-retry-30s"
    assert (before + 42.0) * 1000 - 1 <= record.due_ms <= (after + 42.0) * 1000
    await path.close()


async def test_a_record_is_never_due_later_than_its_topic_delay(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    retry = RetryConfig(schedule_seconds=[5, 300])
    throttled = Outcome(Kind.HTTP_STATUS, retryable=True, status=429, retry_after=300)
    decision = decide(throttled, retry.quick_attempts, 0, retry, random.Random(1))
    assert isinstance(decision, Delay)
    sink = MemoryDelaySink()
    path = DelayPath(sink, "webhook-retry")
    submitted_at = time.time()
    path.submit(failed_delivery(catalog), decision, lambda: None)
    await wait_until(lambda: len(sink.written) == 1, what="delay record written")
    await path.close()
    ((topic, record),) = sink.written
    topic_delay = {delay_topic("webhook-retry", d): d for d in retry.schedule_seconds}[topic]
    # Later than the topic's delay, it would hold back every record behind it.
    assert record.due_ms / 1000 - submitted_at <= topic_delay + 1
