"""Held deliveries of one channel share a delay record; read back, the record is done with its
last delivery; a record too large to write is split, never dead-lettered for having shared."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError

from consumer.catalog import Catalog
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaybundle import BUNDLE_SCHEMA_VERSION, MAX_BUNDLE_BYTES, MAX_BUNDLE_DELIVERIES
from consumer.delaypath import (
    CREATED_HEADER,
    DUE_HEADER,
    EXPIRES_HEADER,
    DelayPath,
    MemoryDelaySink,
)
from consumer.delivery import Delivery, Source, delivery_id
from consumer.handoff import Handoff
from consumer.outcome import Kind, Outcome, from_response
from consumer.redelivery import Redelivery

from .fakes import FakeOwner, Record, RecordingLane

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

GROUP = "crm-hooks"
LEVELS = (5.0, 60.0)


@pytest.fixture
def catalog(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Catalog:
    return build_catalog([channel_cfg("crm"), channel_cfg("coupon-system")])[1]


def held(
    catalog: Catalog,
    n: int,
    channel: str = "crm",
    created_at: float | None = None,
    expires_at: float | None = None,
) -> Delivery:
    return Delivery(
        id=delivery_id(channel, [f"e{n}"]),
        channel=catalog.channels[channel],
        campaign_id="double11",
        template_param={"discount": "20%"},
        user_attr=[{"hobby": "game1"}],
        events=[{"event_id": f"e{n}", "user_id": f"u{n}"}],
        sources=[Source("user-threshold-events", 0, n)],
        attempts=1,
        rounds=0,
        created_at=time.time() if created_at is None else created_at,
        expires_at=expires_at,
        last_error=from_response(503, None, "down"),
    )


@dataclass
class Path:
    sink: MemoryDelaySink
    path: DelayPath
    written: list[str]  # delivery ids, as their on_written ran

    def submit(self, delivery: Delivery, seconds: float, **options: Any) -> None:
        self.path.submit(delivery, seconds, lambda: self.written.append(delivery.id), **options)


@pytest.fixture
async def delays() -> AsyncIterator[Path]:
    sink = MemoryDelaySink()
    path = DelayPath(sink, "webhook-retry", LEVELS, GROUP)
    yield Path(sink, path, [])
    await path.close()


async def test_deliveries_of_one_channel_and_level_share_one_record(
    delays: Path, catalog: Catalog, wait_until: WaitUntil
) -> None:
    deliveries = [
        held(catalog, 1, created_at=1_700_000_300.0, expires_at=1_800_000_000.0),
        held(catalog, 2, created_at=1_700_000_100.0),
        held(catalog, 3, created_at=1_700_000_200.0, expires_at=1_790_000_000.0),
    ]
    before = time.time()
    for seconds, delivery in zip((4.0, 2.0, 3.0), deliveries, strict=True):
        delays.submit(delivery, seconds)
    assert delays.written == []  # not before the record is durable
    await wait_until(lambda: len(delays.written) == 3, what="all three written")
    assert len(delays.sink.values) == 1
    document = orjson.loads(delays.sink.values[0])
    assert document["schema_version"] == BUNDLE_SCHEMA_VERSION
    assert [d["delivery_id"] for d in document["deliveries"]] == [d.id for d in deliveries]
    assert {topic for topic, _ in delays.sink.written} == {"webhook-retry.5s"}
    headers = dict(delays.sink.headers[0])
    # Due with its earliest member: nobody waits longer than asked.
    assert int(headers[DUE_HEADER]) == min(r.due_ms for _, r in delays.sink.written)
    assert before + 2.0 - 0.001 <= int(headers[DUE_HEADER]) / 1000 <= time.time() + 2.0
    # The oldest member's age and the soonest expiry: either gets the record decoded.
    assert headers[CREATED_HEADER] == b"1700000100000"
    assert headers[EXPIRES_HEADER] == b"1790000000000"
    assert headers["channel"] == b"crm"


async def test_other_channels_levels_keys_and_headers_get_records_of_their_own(
    delays: Path, catalog: Catalog, wait_until: WaitUntil
) -> None:
    delays.submit(held(catalog, 1), 4.0)
    delays.submit(held(catalog, 2, "coupon-system"), 4.0)
    delays.submit(held(catalog, 3), 30.0)  # the 60 s level
    delays.submit(held(catalog, 4), 4.0, key=b"u4")  # ordered: keeps its partition
    delays.submit(held(catalog, 5), 4.0, headers=[("order-seen", b"9")])
    delays.submit(held(catalog, 6), 4.0)  # joins the first
    await wait_until(lambda: len(delays.written) == 6, what="all six written")
    carried = [sorted(d["delivery_id"] for d in _deliveries(value)) for value in delays.sink.values]
    ids = {n: held(catalog, n).id for n in (1, 3, 4, 5, 6)}
    ids[2] = held(catalog, 2, "coupon-system").id
    assert sorted(carried) == sorted(
        [sorted([ids[1], ids[6]]), [ids[2]], [ids[3]], [ids[4]], [ids[5]]]
    )
    # One delivery alone keeps the single-delivery format older versions read.
    singles = [orjson.loads(v) for v in delays.sink.values if len(_deliveries(v)) == 1]
    assert all(s["schema_version"] == 1 and "delivery_id" in s for s in singles)
    assert delays.sink.keys.count(b"u4") == 1


async def test_a_full_bundle_starts_another(
    delays: Path, catalog: Catalog, wait_until: WaitUntil
) -> None:
    total = MAX_BUNDLE_DELIVERIES + 1
    for n in range(total):
        delays.submit(held(catalog, n), 4.0)
    await wait_until(lambda: len(delays.written) == total, what="all written")
    # Whichever cap comes first (these deliveries are ~0.5 KiB: the bytes), in order.
    assert len(delays.sink.values) == 2
    assert all(len(v) <= MAX_BUNDLE_BYTES for v in delays.sink.values)
    carried = [d["delivery_id"] for v in delays.sink.values for d in _deliveries(v)]
    assert carried == [held(catalog, n).id for n in range(total)]


class GatedSink(MemoryDelaySink):
    """Holds each write until the test lets it through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls = 0

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        self.calls += 1
        await self.gate.wait()
        return await super().send(topic, value, key, headers)


async def test_a_bundle_the_writer_took_takes_no_more(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    sink = GatedSink()
    path = DelayPath(sink, "webhook-retry", LEVELS, GROUP)
    try:
        path.submit(held(catalog, 1), 4.0, lambda: None)
        await wait_until(lambda: sink.calls == 1, what="the first record being written")
        path.submit(held(catalog, 2), 4.0, lambda: None)
        path.submit(held(catalog, 3), 4.0, lambda: None)
        sink.gate.set()
        await wait_until(lambda: len(sink.written) == 3, what="all written")
        assert [len(_deliveries(v)) for v in sink.values] == [1, 2]
    finally:
        await path.close()


class SizeLimitedSink(MemoryDelaySink):
    """Refuses any record holding more than one delivery, as a broker with a small
    max.message.bytes would refuse a large one."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        if len(_deliveries(value)) > 1:
            raise MessageSizeTooLargeError("too large")
        return await super().send(topic, value, key, headers)


async def test_a_bundle_too_large_to_write_is_split_not_dead_lettered(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    sink = SizeLimitedSink()
    given_up: list[tuple[str, Outcome]] = []
    path = DelayPath(
        sink,
        "webhook-retry",
        LEVELS,
        GROUP,
        Handoff("delay"),
        on_unwritable=lambda d, reason: given_up.append((d.id, reason)),
    )
    written: list[str] = []
    deliveries = [held(catalog, n) for n in range(3)]
    try:
        for delivery in deliveries:
            path.submit(delivery, 4.0, lambda d=delivery: written.append(d.id))  # type: ignore[misc]
        await wait_until(lambda: len(written) == 3, what="each written alone")
    finally:
        await path.close()
    assert sorted(written) == sorted(d.id for d in deliveries)
    assert [len(_deliveries(v)) for v in sink.values] == [1, 1, 1]
    assert given_up == []


async def test_one_delivery_too_large_alone_gives_up_as_its_own(
    catalog: Catalog, wait_until: WaitUntil
) -> None:
    class Refusing(MemoryDelaySink):
        async def send(
            self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
        ) -> Awaitable[Any]:
            raise MessageSizeTooLargeError("too large")

    given_up: list[Kind] = []
    path = DelayPath(
        Refusing(),
        "webhook-retry",
        LEVELS,
        GROUP,
        on_unwritable=lambda _, reason: given_up.append(reason.kind),
    )
    try:
        path.submit(held(catalog, 1), 4.0, lambda: None)
        await wait_until(lambda: given_up != [], what="its fallback")
    finally:
        await path.close()
    assert given_up == [Kind.UNWRITABLE]


async def bundle_of_three(delays: Path, catalog: Catalog, wait_until: WaitUntil) -> Record:
    """Three held deliveries of "crm", written as one record, as the listener reads it."""
    for n in range(3):
        delays.submit(held(catalog, n), 4.0)
    await wait_until(lambda: len(delays.written) == 3, what="the bundle written")
    [value], [headers] = delays.sink.values, delays.sink.headers
    return Record("webhook-retry.5s", 0, 42, value, headers)


async def read_back(
    delays: Path, catalog: Catalog, record: Record, lanes: dict[str, RecordingLane]
) -> FakeOwner:
    """The record through the redelivery; the owner hears when it is finished."""
    writer = DeadLetterWriter(MemoryDeadLetterSink())
    owner = FakeOwner()
    try:
        redelivery = Redelivery(catalog, lanes, writer, delays.path, GROUP, 3600.0)
        await redelivery.dispatch([record], owner)
    finally:
        await writer.close()
    return owner


async def test_a_bundle_read_back_is_done_with_its_last_delivery(
    delays: Path, catalog: Catalog, wait_until: WaitUntil
) -> None:
    record = await bundle_of_three(delays, catalog, wait_until)
    lanes = {name: RecordingLane() for name in catalog.channels}
    owner = await read_back(delays, catalog, record, lanes)
    got = lanes["crm"].deliveries
    assert [d.id for d in got] == [held(catalog, n).id for n in range(3)]
    got[0].finish()
    got[2].finish()
    assert owner == []  # one of its deliveries is still out
    got[1].finish()
    assert owner == [42]


async def test_a_bundle_back_while_the_circuit_is_open_waits_again_as_one_record(
    delays: Path, catalog: Catalog, wait_until: WaitUntil
) -> None:
    record = await bundle_of_three(delays, catalog, wait_until)
    lanes = {name: RecordingLane() for name in catalog.channels}
    lanes["crm"].held = 30.0
    owner = await read_back(delays, catalog, record, lanes)
    await wait_until(lambda: owner == [42], what="the record written back")
    assert lanes["crm"].deliveries == []
    assert delays.sink.values[1] == record.value  # undecoded: the same bytes, one record


async def test_a_bundle_holds_at_most_its_count_of_deliveries(
    delays: Path, catalog: Catalog, wait_until: WaitUntil, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("consumer.delaybundle.MAX_BUNDLE_DELIVERIES", 3)
    for n in range(4):
        delays.submit(held(catalog, n), 4.0)
    await wait_until(lambda: len(delays.written) == 4, what="all written")
    assert [len(_deliveries(v)) for v in delays.sink.values] == [3, 1]


def _deliveries(value: bytes) -> list[dict[str, Any]]:
    document = orjson.loads(value)
    return list(document["deliveries"]) if document["schema_version"] == 2 else [document]
