"""Delay-topic records back into deliveries for their lane, or into dead letters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from consumer.catalog import Catalog
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayedDelivery, DelayPath, MemoryDelaySink, headers_for
from consumer.delivery import Delivery, Source, delivery_id
from consumer.orderledger import ORDER_SEEN, Fact, MemoryLedgerSink, OrderLedger
from consumer.outcome import from_response
from consumer.redelivery import Redelivery

from .fakes import FakeOwner, Record, RecordingLane

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

DELAY_TOPIC = "webhook-consumer.retry.60s"
GROUP = "webhook-consumer"
MAX_AGE = 3600.0
INPUT = Source("user-threshold-events", 3, 500)


@dataclass
class World:
    catalog: Catalog
    redelivery: Redelivery
    lanes: dict[str, RecordingLane]
    letters: MemoryDeadLetterSink
    finished: FakeOwner
    delayed: MemoryDelaySink

    async def dispatch(self, *records: Record) -> None:
        await self.redelivery.dispatch(records, self.finished)


@pytest.fixture
async def world(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> AsyncIterator[World]:
    _, catalog = build_catalog([channel_cfg("crm"), channel_cfg("coupon-system")])
    lanes = {name: RecordingLane() for name in catalog.channels}
    letters = MemoryDeadLetterSink()
    writer = DeadLetterWriter(letters)
    sink = MemoryDelaySink()
    delays = DelayPath(sink, f"{GROUP}.retry", (5.0, 60.0), GROUP)
    redelivery = Redelivery(catalog, lanes, writer, delays, GROUP, MAX_AGE)
    yield World(catalog, redelivery, lanes, letters, FakeOwner(), sink)
    await delays.close()
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


def record(offset: int, value: bytes | None, group: str | None = GROUP) -> Record:
    headers = [] if group is None else [("group", group.encode())]
    return Record(DELAY_TOPIC, 0, offset, value, headers)


def raw(waiting: DelayedDelivery, offset: int = 1) -> Record:
    """The record as the delay path writes it, headers and all."""
    return Record(
        DELAY_TOPIC, 0, offset, waiting.model_dump_json().encode(), headers_for(waiting, GROUP)
    )


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
    assert world.finished == [7]


async def test_each_record_finishes_on_its_own(world: World) -> None:
    crm = delayed(world.catalog, "crm").model_dump_json().encode()
    coupon = delayed(world.catalog, "coupon-system").model_dump_json().encode()
    await world.dispatch(record(1, crm), record(2, coupon))
    world.lanes["coupon-system"].deliveries[0].finish()
    assert world.finished == [2]
    world.lanes["crm"].deliveries[0].finish()
    assert world.finished == [2, 1]


@pytest.mark.parametrize("value", [None, b"{oops", b'{"delivery_id": "only this"}'])
async def test_garbage_is_dead_lettered(
    world: World, wait_until: WaitUntil, value: bytes | None
) -> None:
    await world.dispatch(record(9, value))
    await wait_until(lambda: world.finished == [9], what="dead letter")
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
    await wait_until(lambda: world.finished == [4], what="dead letter")
    (letter,) = world.letters.letters
    assert letter.reason.kind == "unknown_channel"
    assert "retired" in letter.reason.message
    # Kept whole under its channel's name: replay sends it once that channel exists again.
    assert (letter.channel, letter.delivery_id) == ("retired", waiting.delivery_id)
    assert letter.campaign_id == "double11"
    assert letter.events == waiting.events
    assert letter.user_attr == waiting.user_attr
    assert (letter.attempts, letter.rounds) == (3, 1)
    assert letter.sources[0].offset == INPUT.offset
    assert all(not lane.deliveries for lane in world.lanes.values())


async def test_another_deployments_record_is_skipped_not_dead_lettered(world: World) -> None:
    theirs = delayed(world.catalog).model_dump_json().encode()
    await world.dispatch(record(5, theirs, group="someone-else"))
    assert world.finished == [5]  # committed past at once
    assert world.letters.letters == []
    assert all(not lane.deliveries for lane in world.lanes.values())


async def test_a_record_without_a_group_header_is_taken(world: World) -> None:
    """Records written before the header existed still come back."""
    await world.dispatch(record(6, delayed(world.catalog).model_dump_json().encode(), group=None))
    assert len(world.lanes["crm"].deliveries) == 1


async def test_back_while_the_circuit_is_open_it_waits_again_undecoded(
    world: World, wait_until: WaitUntil
) -> None:
    world.lanes["crm"].held = 30.0  # the probe goes out in 30 s
    waiting = delayed(world.catalog)
    await world.dispatch(raw(waiting, offset=3))
    assert world.lanes["crm"].deliveries == []
    await wait_until(lambda: world.finished == [3], what="written back")
    ((topic, again),) = world.delayed.written
    assert topic == f"{GROUP}.retry.60s"
    assert again == waiting  # attempts, rounds and the rest unchanged: no round was used
    assert int(dict(world.delayed.headers[0])["due-ms"]) / 1000 == pytest.approx(
        time.time() + 30, abs=2
    )


async def test_an_expired_delivery_is_not_held_again(world: World) -> None:
    world.lanes["crm"].held = 30.0
    old = delayed(world.catalog).model_copy(update={"created_at": time.time() - MAX_AGE})
    await world.dispatch(raw(old))
    # Decoded and handed to its lane, which writes its max_age dead letter.
    assert len(world.lanes["crm"].deliveries) == 1
    assert world.delayed.written == []


def ordered_redelivery(world: World, ledger: OrderLedger) -> Redelivery:
    """The world's redelivery, with an order ledger (a channel keeps its users' order)."""
    return Redelivery(
        world.catalog,
        world.lanes,
        DeadLetterWriter(world.letters),
        DelayPath(world.delayed, f"{GROUP}.retry", (5.0, 60.0), GROUP),
        GROUP,
        MAX_AGE,
        ledger=ledger,
    )


async def test_an_ordered_record_waits_until_this_process_has_read_what_its_writer_knew(
    world: World, wait_until: WaitUntil
) -> None:
    """Its writer had read the order topic up to 5: a process whose view is behind that could
    miss an earlier delivery of the same user, so the record waits a moment, undecoded."""
    ledger = OrderLedger(MemoryLedgerSink())
    world.redelivery = ordered_redelivery(world, ledger)
    waiting = delayed(world.catalog)
    ordered = raw(waiting, offset=3)
    ordered = Record(
        ordered.topic, 0, 3, ordered.value, [*ordered.headers, (ORDER_SEEN, b"5")], key=b"u1"
    )
    await world.dispatch(ordered)
    assert world.lanes["crm"].deliveries == []
    await wait_until(lambda: world.finished == [3], what="written back")
    ((topic, again),) = world.delayed.written
    assert (topic, again, world.delayed.keys) == (f"{GROUP}.retry.5s", waiting, [b"u1"])
    ledger.read_to(5)  # the view has read as far
    await world.dispatch(Record(ordered.topic, 0, 4, ordered.value, ordered.headers, key=b"u1"))
    assert len(world.lanes["crm"].deliveries) == 1


async def test_an_ordered_record_back_while_the_circuit_is_open_goes_to_its_lane(
    world: World,
) -> None:
    """Its lane sends it back with the rest of its user's chain and updates the order ledger,
    rather than have it rewritten unread."""
    world.lanes["crm"].held = 30.0
    ordered = raw(delayed(world.catalog), offset=3)
    headers = [*ordered.headers, (ORDER_SEEN, b"0")]
    await world.dispatch(Record(ordered.topic, 0, 3, ordered.value, headers, key=b"u1"))
    assert len(world.lanes["crm"].deliveries) == 1
    assert world.delayed.written == []


async def test_an_ordered_delivery_of_a_channel_gone_erases_its_order_fact(
    world: World, channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    """Dead-lettered (unknown_channel), it releases the next of its user, as a dead letter
    does: its fact goes once the letter is written, and only then is its record finished."""
    topic = MemoryLedgerSink()
    ledger = OrderLedger(topic)
    _, yesterday = build_catalog([channel_cfg("retired")])
    waiting = delayed(yesterday, "retired")
    ledger.record("retired", "u1", (INPUT.partition, INPUT.offset), Fact(0, 0, "d", 60.0))
    redelivery = ordered_redelivery(world, ledger)
    await redelivery.dispatch([record(4, waiting.model_dump_json().encode())], world.finished)
    await wait_until(lambda: world.finished == [4], what="dead-lettered, fact erased")
    assert [letter.reason.kind for letter in world.letters.letters] == ["unknown_channel"]
    assert ledger.channel("retired") == {}
    assert [value is None for _, value in topic.records] == [False, True]
    await ledger.close()
