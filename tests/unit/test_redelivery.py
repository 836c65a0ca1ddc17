"""Delay-topic records back into deliveries for their lane, or into dead letters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from consumer.catalog import Catalog
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayedDelivery
from consumer.delivery import Delivery, Source, delivery_id
from consumer.outcome import from_response
from consumer.redelivery import Redelivery

from .fakes import Record, RecordingLane

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

DELAY_TOPIC = "webhook-retry-60s"
INPUT = Source("user-threshold-events", 3, 500)


@dataclass
class World:
    catalog: Catalog
    redelivery: Redelivery
    lanes: dict[str, RecordingLane]
    letters: MemoryDeadLetterSink
    finished: list[Source]

    async def dispatch(self, *records: Record) -> None:
        await self.redelivery.dispatch(records, self.finished.append)


@pytest.fixture
async def world(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> AsyncIterator[World]:
    _, catalog = build_catalog([channel_cfg("crm"), channel_cfg("coupon-system")])
    lanes = {name: RecordingLane() for name in catalog.channels}
    letters = MemoryDeadLetterSink()
    writer = DeadLetterWriter(letters)
    yield World(catalog, Redelivery(catalog, lanes, writer), lanes, letters, [])
    await writer.close()


def delayed(catalog: Catalog, channel: str = "crm") -> DelayedDelivery:
    delivery = Delivery(
        id=delivery_id(channel, ["e1"]),
        channel=catalog.channels[channel],
        campaign_id="double11",
        template_param={"discount": "20%"},
        user_attr=[{"hobby": "game1"}],
        events=[{"event_id": "e1", "user_id": "u1"}],
        sources=[INPUT],
        attempts=3,
        rounds=1,
        last_error=from_response(503, None, "down"),
    )
    return DelayedDelivery.of(delivery, due_ms=1_700_000_000_000)


def record(offset: int, value: bytes | None) -> Record:
    return Record(DELAY_TOPIC, 0, offset, value)


async def test_a_delayed_delivery_goes_back_to_its_lane(world: World) -> None:
    waiting = delayed(world.catalog)
    await world.dispatch(record(7, waiting.model_dump_json().encode()))
    (delivery,) = world.lanes["crm"].deliveries
    assert world.lanes["coupon-system"].deliveries == []
    assert (delivery.id, delivery.attempts, delivery.rounds) == (waiting.delivery_id, 3, 1)
    assert delivery.channel is world.catalog.channels["crm"]
    assert delivery.sources == [INPUT]  # still names the input record, for dead letters
    assert world.finished == []  # not until the lane is done with it
    delivery.finish()
    assert world.finished == [Source(DELAY_TOPIC, 0, 7)]


async def test_each_record_finishes_on_its_own(world: World) -> None:
    crm = delayed(world.catalog, "crm").model_dump_json().encode()
    coupon = delayed(world.catalog, "coupon-system").model_dump_json().encode()
    await world.dispatch(record(1, crm), record(2, coupon))
    world.lanes["coupon-system"].deliveries[0].finish()
    assert world.finished == [Source(DELAY_TOPIC, 0, 2)]
    world.lanes["crm"].deliveries[0].finish()
    assert world.finished == [Source(DELAY_TOPIC, 0, 2), Source(DELAY_TOPIC, 0, 1)]


@pytest.mark.parametrize("value", [None, b"{oops", b'{"delivery_id": "only this"}'])
async def test_garbage_is_dead_lettered(
    world: World, wait_until: WaitUntil, value: bytes | None
) -> None:
    await world.dispatch(record(9, value))
    await wait_until(lambda: world.finished == [Source(DELAY_TOPIC, 0, 9)], what="dead letter")
    (letter,) = world.letters.letters
    assert letter.reason.kind == "invalid_event"
    assert letter.reason.message.startswith("not a delayed delivery")
    assert (letter.source.topic, letter.source.offset) == (DELAY_TOPIC, 9)
    assert all(not lane.deliveries for lane in world.lanes.values())


async def test_a_channel_no_longer_configured_is_dead_lettered(
    world: World, channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    _, yesterday = build_catalog([channel_cfg("retired")])
    waiting = delayed(yesterday, "retired")
    await world.dispatch(record(4, waiting.model_dump_json().encode()))
    await wait_until(lambda: world.finished == [Source(DELAY_TOPIC, 0, 4)], what="dead letter")
    (letter,) = world.letters.letters
    assert letter.reason.kind == "unknown_channel"
    assert "retired" in letter.reason.message
    assert letter.campaign_id == "double11"
    assert letter.events[0]["delivery_id"] == waiting.delivery_id  # the whole record is kept
    assert all(not lane.deliveries for lane in world.lanes.values())
