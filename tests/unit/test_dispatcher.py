"""Records into deliveries, with in-memory lanes, attribute store and dead-letter sink."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from consumer.attributes import MemoryAttributeStore
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delivery import Source, delivery_id
from consumer.dispatcher import Dispatcher
from consumer.observer import Details, Observer, RecordsTraced
from consumer.payload import encode_body

from .fakes import FakeOwner, Record, RecordingLane

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

TOPIC = "user-threshold-events"


def event(event_id: str, user_id: str, campaign_id: str = "double11") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": user_id,
        "campaign_id": campaign_id,
        "occurred_at": "2026-11-11T00:00:05.123Z",
    }


def record(offset: int, value: dict[str, Any] | bytes) -> Record:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return Record(TOPIC, 0, offset, raw)


@dataclass
class World:
    dispatcher: Dispatcher
    lanes: dict[str, RecordingLane]
    letters: MemoryDeadLetterSink
    finished: FakeOwner
    observer: Observer

    async def dispatch(self, *records: Record) -> None:
        await self.dispatcher.dispatch(records, self.finished)


@pytest.fixture
async def world(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> World:
    channels = [
        channel_cfg(
            "coupon-system",
            template_params={"campaignType": "string", "discount": "string", "quota": "integer"},
            user_attributes=["hobby", "birthday"],
        ),
        channel_cfg("crm", template_params={"discount": "string"}, user_attributes=["birthday"]),
        channel_cfg(
            "digest",
            template_params={"campaignType": "string"},
            user_attributes=["hobby"],
            batch={"max_users": 3, "linger_ms": 50},
        ),
        channel_cfg(
            "weekly",
            template_params={},
            user_attributes=["hobby"],
            batch={"max_users": 10, "linger_ms": 600_000},
        ),
    ]
    template = {"quota": 3, "discount": "20%", "campaignType": "双十一"}
    campaigns = [
        {"id": "double11", "channels": ["coupon-system", "crm"], "template_params": template},
        {"id": "digest-a", "channels": ["digest"], "template_params": {"campaignType": "A"}},
        {"id": "digest-b", "channels": ["digest"], "template_params": {"campaignType": "B"}},
        {"id": "weekly", "channels": ["weekly"]},
    ]
    _, catalog = build_catalog(channels, campaigns)
    store = MemoryAttributeStore()
    await store.put_many(
        [
            ("u1", {"birthday": "1992-02-01", "hobby": "game1", "phone": "138"}),
            ("u2", {"hobby": "game2"}),
            ("u3", {"hobby": "game3", "birthday": "1990-02-01"}),
        ]
    )
    lanes = {name: RecordingLane() for name in catalog.channels}
    sink = MemoryDeadLetterSink()
    observer = Observer()
    dispatcher = Dispatcher(catalog, store, lanes, DeadLetterWriter(sink), observer)
    return World(dispatcher, lanes, sink, FakeOwner(), observer)


async def test_one_delivery_per_channel_of_the_campaign(world: World) -> None:
    document = event("e1", "u1")
    await world.dispatch(record(7, document))

    (coupon,) = world.lanes["coupon-system"].deliveries
    assert coupon.id == delivery_id("coupon-system", ["e1"])
    assert list(coupon.template_param.items()) == [
        ("campaignType", "双十一"),
        ("discount", "20%"),
        ("quota", 3),
    ]
    assert coupon.user_attr == [{"hobby": "game1", "birthday": "1992-02-01"}]
    assert coupon.events == [document]
    assert coupon.sources == [Source(TOPIC, 0, 7)]
    assert (
        encode_body("coupon-system", coupon.template_param, coupon.user_attr, 1)
        == (
            '{"name":"coupon-system","templateParam":{"campaignType":"双十一","discount":"20%",'
            '"quota":3},"userAttr":[{"hobby":"game1","birthday":"1992-02-01"}],"timestamp":"1"}'
        ).encode()
    )

    (crm,) = world.lanes["crm"].deliveries
    assert crm.id == delivery_id("crm", ["e1"]) != coupon.id
    assert dict(crm.template_param) == {"discount": "20%"}
    assert crm.user_attr == [{"birthday": "1992-02-01"}]
    assert world.lanes["digest"].deliveries == []
    assert world.finished == []


async def test_user_without_attributes_is_still_delivered(world: World) -> None:
    await world.dispatch(record(1, event("e1", "nobody")), record(2, event("e2", "u2")))
    assert [d.user_attr for d in world.lanes["coupon-system"].deliveries] == [
        [],
        [{"hobby": "game2"}],
    ]
    assert [d.user_attr for d in world.lanes["crm"].deliveries] == [[], [{}]]


async def test_record_finishes_only_after_all_its_deliveries(world: World) -> None:
    await world.dispatch(record(3, event("e1", "u1")))
    (coupon,) = world.lanes["coupon-system"].deliveries
    (crm,) = world.lanes["crm"].deliveries
    coupon.finish()
    assert world.finished == []
    crm.finish()
    assert world.finished == [3]


async def test_bad_records_are_dead_lettered_and_finished(
    world: World, wait_until: WaitUntil
) -> None:
    await world.dispatch(
        record(10, b"{not json"),
        record(11, event("e1", "u1", campaign_id="no-such-campaign")),
        record(12, event("e2", "u1")),
    )
    await wait_until(lambda: len(world.letters.letters) == 2, what="two dead letters")
    await wait_until(lambda: len(world.finished) == 2, what="both bad records finished")

    by_offset = {letter.source.offset: letter for letter in world.letters.letters}
    assert by_offset[10].reason.kind == "invalid_event"
    assert by_offset[10].events == ["{not json"]
    assert by_offset[11].reason.kind == "unknown_campaign"
    assert by_offset[11].campaign_id == "no-such-campaign"
    assert "no-such-campaign" in by_offset[11].reason.message
    assert by_offset[11].events == [event("e1", "u1", campaign_id="no-such-campaign")]
    assert sorted(world.finished) == [10, 11]
    # The good record in the same batch went on as usual.
    assert len(world.lanes["coupon-system"].deliveries) == 1


async def test_full_batch_is_one_delivery(world: World) -> None:
    await world.dispatch(*(record(i, event(f"e{i}", f"u{i}", "digest-a")) for i in (3, 1, 2)))
    (batch,) = world.lanes["digest"].deliveries
    assert batch.user_attr == [{"hobby": "game3"}, {"hobby": "game1"}, {"hobby": "game2"}]
    assert batch.id == delivery_id("digest", ["e1", "e2", "e3"])
    assert dict(batch.template_param) == {"campaignType": "A"}
    assert sorted(s.offset for s in batch.sources) == [1, 2, 3]
    batch.finish()
    assert sorted(world.finished) == [1, 2, 3]


async def test_campaigns_are_not_mixed_in_a_batch(world: World) -> None:
    await world.dispatch(
        record(1, event("e1", "u1", "digest-a")),
        record(2, event("e2", "u2", "digest-b")),
    )
    world.dispatcher.flush()
    deliveries = world.lanes["digest"].deliveries
    assert sorted((d.campaign_id, d.template_param["campaignType"]) for d in deliveries) == [
        ("digest-a", "A"),
        ("digest-b", "B"),
    ]


async def test_lone_user_is_sent_after_linger(world: World, wait_until: WaitUntil) -> None:
    await world.dispatch(record(5, event("e5", "u1", "digest-a")))
    assert world.lanes["digest"].deliveries == []
    await wait_until(lambda: len(world.lanes["digest"].deliveries) == 1, what="linger flush")
    (batch,) = world.lanes["digest"].deliveries
    assert batch.id == delivery_id("digest", ["e5"])
    assert batch.user_attr == [{"hobby": "game1"}]


async def test_flush_sends_lingering_batches_now(world: World) -> None:
    await world.dispatch(
        record(1, event("e1", "u1", "weekly")), record(2, event("e2", "nobody", "weekly"))
    )
    assert world.lanes["weekly"].deliveries == []
    world.dispatcher.flush()
    (batch,) = world.lanes["weekly"].deliveries
    assert batch.user_attr == [{"hobby": "game1"}]  # the unknown user has no userAttr entry
    assert len(batch.events) == 2
    world.dispatcher.flush()
    assert len(world.lanes["weekly"].deliveries) == 1


TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize("spans", [False, True])
async def test_a_records_trace_goes_with_its_deliveries(world: World, spans: bool) -> None:
    heard: list[Details] = []
    world.observer.add(heard.append, spans=spans)
    traced = Record(
        TOPIC, 0, 7, json.dumps(event("e7", "u1")).encode(), [("traceparent", TRACEPARENT)]
    )
    await world.dispatch(traced, record(8, event("e8", "u2")))
    by_event = {d.events[0]["event_id"]: d for d in world.lanes["crm"].deliveries}
    trace = by_event["e7"].trace
    assert trace is not None
    assert (trace.trace_id, trace.parent_id) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )
    assert world.lanes["coupon-system"].deliveries[0].trace is trace  # one span per record
    assert by_event["e8"].trace is None
    traced_batches = [d for d in heard if isinstance(d, RecordsTraced)]
    if not spans:  # nobody records spans: nothing is emitted for them
        assert traced_batches == []
        return
    [batch] = traced_batches
    assert batch.records == ((trace, Source(TOPIC, 0, 7)),)
    assert batch.lookup_ns is not None
    assert batch.started_ns <= batch.lookup_ns[0] <= batch.lookup_ns[1] <= batch.ended_ns
