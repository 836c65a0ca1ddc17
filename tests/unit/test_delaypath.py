"""Delay topics: their names, the delayed-delivery record, and durable writing."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from consumer.catalog import Catalog
from consumer.config import CircuitBreakerConfig, RetryConfig
from consumer.deadletter import for_delivery
from consumer.delaypath import (
    DUE_HEADER,
    DelayedDelivery,
    DelayPath,
    MemoryDelaySink,
    delay_levels,
    delay_topic,
    delay_topics,
    due_ms_of,
    level_for,
    level_of,
    parse_delayed_records,
    topic_pattern,
)
from consumer.delivery import Delivery, Source, delivery_id
from consumer.handoff import Handoff
from consumer.outcome import Kind, from_response
from consumer.tracecontext import TraceContext

from .fakes import Record

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
    [(5, "webhook-retry.5s"), (300.0, "webhook-retry.300s"), (1.5, "webhook-retry.1500ms")],
)
def test_delay_topic_names_and_their_levels(seconds: float, name: str) -> None:
    assert delay_topic("webhook-retry", seconds) == name
    assert level_of(name, "webhook-retry") == seconds
    assert re.fullmatch(topic_pattern("webhook-retry"), name)


@pytest.mark.parametrize(
    "topic",
    [
        "webhook-retry.5x",
        "webhook-retry5s",
        "other.retry.5s",
        "webhook-retry.5s.x",
        "webhook-retry.",
    ],
)
def test_topics_of_other_deployments_or_shapes_have_no_level(topic: str) -> None:
    assert level_of(topic, "webhook-retry") is None
    assert not re.fullmatch(topic_pattern("webhook-retry"), topic)


def test_the_prefix_is_matched_literally() -> None:
    assert not re.fullmatch(topic_pattern("a.b"), "aXb.5s")  # a dot in a name is no wildcard


def test_default_topic_names_derive_from_the_group(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    config, _ = build_catalog([channel_cfg()], kafka={"group_id": "crm-hooks"})
    assert config.kafka.dead_letter_topic == "crm-hooks.dlq"
    assert config.kafka.retry_topic_prefix == "crm-hooks.retry"
    assert delay_topics(config)[0] == "crm-hooks.retry.5s"
    named, _ = build_catalog(
        [channel_cfg()],
        kafka={"group_id": "g", "dead_letter_topic": "dl", "retry_topic_prefix": "r"},
    )
    assert (named.kafka.dead_letter_topic, named.kafka.retry_topic_prefix) == ("dl", "r")


def _retry(schedule: list[float], max_cooldown: float = 16) -> RetryConfig:
    breaker = CircuitBreakerConfig(cooldown_seconds=2, max_cooldown_seconds=max_cooldown)
    return RetryConfig(schedule_seconds=schedule, circuit_breaker=breaker)


def test_levels_are_the_schedule_plus_a_ladder_of_waits() -> None:
    svix = RetryConfig()  # 5, 300, 1800, 7200, 18000, 36000, 36000; probes at most every 300
    assert delay_levels(svix) == (5, 20, 80, 300, 1800, 7200, 18000, 36000)
    assert delay_levels(_retry([2, 4, 8, 16, 32])) == (2, 4, 8, 16, 32)
    assert delay_levels(_retry([1, 2.5, 2.5, 60])) == (1, 2.5, 4, 16, 60)
    assert delay_levels(_retry([], max_cooldown=5)) == (5.0,)  # still one for waiting


def test_the_longest_wait_for_a_probe_has_a_level_of_its_own() -> None:
    """A short schedule with the default 300 s cool-down cap: a delivery held through a long
    outage waits up to 300 s per probe, not the schedule's 2 s over and over."""
    assert delay_levels(_retry([1, 2], max_cooldown=300)) == (1, 2, 4, 16, 64, 300)


@pytest.mark.parametrize(
    ("wait", "level"), [(0.1, 5), (5, 5), (6, 20), (30, 80), (299, 300), (10**6, 36000)]
)
def test_a_wait_rides_the_shortest_level_that_covers_it(wait: float, level: float) -> None:
    assert level_for(wait, delay_levels(RetryConfig())) == level


def test_a_delayed_delivery_comes_back_unchanged(catalog: Catalog) -> None:
    delivery = failed_delivery(catalog)
    delivery.parks = 2
    record = DelayedDelivery.of(delivery, due_ms=1_700_000_605_500)
    [decoded] = parse_delayed_records(record.model_dump_json().encode())
    again = decoded.to_delivery(catalog)
    assert again is not None
    assert again.id == delivery.id
    assert again.channel is catalog.channels["crm"]
    assert again.campaign_id == "double11"
    assert (again.attempts, again.rounds, again.parks) == (4, 1, 2)
    assert again.created_at == delivery.created_at
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


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"{oops",
        b"[1, 2]",
        b'{"delivery_id": "x"}',
        b'{"schema_version": 2, "deliveries": []}',
        b'{"schema_version": 2, "deliveries": [{"delivery_id": "x"}]}',
    ],
)
def test_garbage_is_reported_not_raised(value: bytes | None) -> None:
    result = parse_delayed_records(value)
    assert isinstance(result, str)
    assert result.startswith("not a delayed delivery")


class FlakyDelaySink(MemoryDelaySink):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        return await super().send(topic, value, key, headers)


async def test_submit_writes_to_the_level_topic_and_hands_off_once_durable(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    sink = FlakyDelaySink(failures=2)
    handoff = Handoff("delay", initial_backoff=0.001)
    path = DelayPath(sink, "webhook-retry", (30.0, 60.0), "crm-hooks", handoff)
    written_at_hand_off: list[int] = []
    before = time.time()
    path.submit(
        failed_delivery(catalog), 22.0, lambda: written_at_hand_off.append(len(sink.written))
    )
    after = time.time()
    assert written_at_hand_off == []
    await wait_until(lambda: written_at_hand_off != [], what="delay record written")
    assert written_at_hand_off == [1]
    assert sink.failures == 0
    ((topic, record),) = sink.written
    assert topic == "webhook-retry.30s"
    assert (before + 22.0) * 1000 - 1 <= record.due_ms <= (after + 22.0) * 1000
    [headers] = sink.headers
    assert dict(headers) == {
        DUE_HEADER: str(record.due_ms).encode(),
        "group": b"crm-hooks",
        "channel": b"crm",
        "created-ms": str(int(record.created_at * 1000)).encode(),
    }
    await path.close()


async def test_a_held_record_goes_back_unchanged_but_for_its_due_time(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    sink = MemoryDelaySink()
    path = DelayPath(sink, "webhook-retry", (5.0, 300.0), "crm-hooks")
    path.submit(failed_delivery(catalog), 5.0, lambda: None)
    await wait_until(lambda: len(sink.written) == 1, what="first write")
    original = DelayedDelivery.model_validate(sink.written[0][1].model_dump())
    raw = Record(
        "webhook-retry.5s", 0, 0, original.model_dump_json().encode(), sink.headers[0], b"k"
    )
    path.rewait(raw, 100.0, lambda: None)
    await wait_until(lambda: len(sink.written) == 2, what="second write")
    await path.close()
    topic, again = sink.written[1]
    assert topic == "webhook-retry.300s"
    assert again == original  # the value as it came, due time inside included
    headers = dict(sink.headers[1])
    assert int(headers[DUE_HEADER]) / 1000 == pytest.approx(time.time() + 100, abs=2)
    assert {k: v for k, v in headers.items() if k != DUE_HEADER} == {
        k: v for k, v in dict(sink.headers[0]).items() if k != DUE_HEADER
    }


async def test_a_record_is_never_due_later_than_its_topic_delay(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    sink = MemoryDelaySink()
    path = DelayPath(sink, "webhook-retry", (5.0, 300.0))
    submitted_at = time.time()
    path.submit(failed_delivery(catalog), 86400.0, lambda: None)  # a day: longer than any level
    await wait_until(lambda: len(sink.written) == 1, what="delay record written")
    await path.close()
    ((topic, record),) = sink.written
    assert topic == "webhook-retry.300s"
    # Later than the topic's delay, it would hold back every record behind it; it comes back
    # after 300 s and waits again if it must.
    assert record.due_ms / 1000 - submitted_at <= 300 + 1


def test_a_delayed_delivery_stays_in_its_records_trace(catalog: Catalog) -> None:
    delivery = failed_delivery(catalog)
    delivery.trace = TraceContext(
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01", "a=b", "1111111111111111"
    )
    record = DelayedDelivery.of(delivery, due_ms=1)
    [decoded] = parse_delayed_records(record.model_dump_json().encode())
    again = decoded.to_delivery(catalog)
    assert again is not None
    assert again.trace is not None
    # Our span for the record carries on; the upstream span is the consume span's business.
    assert again.trace.traceparent == delivery.trace.traceparent
    assert again.trace.state == "a=b"
    assert for_delivery(delivery, from_response(404, None, "")).traceparent == (
        delivery.trace.traceparent
    )
