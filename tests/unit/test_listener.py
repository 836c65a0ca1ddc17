"""Delay topics in the listener: due records go on at once, the others wait in memory until
they are due (up to a lookahead), and no due time is believed beyond its topic's delay. A fake
consumer stands in for Kafka."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiokafka import TopicPartition

from consumer import offsetmap
from consumer.config import KafkaConfig
from consumer.delaypath import DUE_HEADER
from consumer.delivery import Owner
from consumer.listener import DELAY_LOOKAHEAD_BYTES, DUE_SLACK_MS, Listener
from tests.support.polling import until

from .fakes import FakeConsumer, Record

PREFIX = "webhook-retry"
DELAY_TOPIC = f"{PREFIX}.5s"
INPUT_TOPIC = "user-threshold-events"
TP = TopicPartition(DELAY_TOPIC, 0)


@dataclass
class RecordingHandler:
    batches: list[list[int]] = field(default_factory=list)
    owner: Owner | None = None

    async def dispatch(self, records: Sequence[Any], owner: Owner) -> None:
        self.batches.append([r.offset for r in records])
        self.owner = owner

    def flush(self) -> None:
        pass

    def finish(self, *offsets: int) -> None:
        assert self.owner is not None
        for offset in offsets:
            self.owner.finished(offset)


def now_ms() -> int:
    return int(time.time() * 1000)


def record(
    offset: int, due_ms: int | None, topic: str = DELAY_TOPIC, written_ms: int | None = None
) -> Record:
    headers = [] if due_ms is None else [(DUE_HEADER, str(due_ms).encode())]
    written = written_ms or now_ms()
    return Record(topic, 0, offset, b"{}", [("channel", b"crm"), *headers], timestamp=written)


@dataclass
class World:
    listener: Listener
    consumer: FakeConsumer
    redelivered: RecordingHandler
    dispatched: RecordingHandler

    async def release(self, within: float = 3.0) -> None:
        """Let the loop's due check run until something more is released."""
        before = len(self.redelivered.batches)

        async def released() -> bool:
            await self.listener._release_due()
            return len(self.redelivered.batches) > before

        assert await until(released, within, every=0.005), "nothing fell due"


@pytest.fixture
def make_world() -> Callable[..., World]:
    def make(max_in_flight: int = 100, lookahead: int = 10) -> World:
        consumer = FakeConsumer(TP)
        redelivered, dispatched = RecordingHandler(), RecordingHandler()
        config = KafkaConfig(
            retry_topic_prefix=PREFIX,
            max_in_flight_per_partition=max_in_flight,
            delay_lookahead_records=lookahead,
        )
        listener = Listener(consumer, dispatched, redelivered, config)  # type: ignore[arg-type]
        listener.tracker.assign((DELAY_TOPIC, 0))
        return World(listener, consumer, redelivered, dispatched)

    return make


async def test_due_records_go_on_and_the_others_wait_in_memory_until_due(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    due = now_ms() + 150
    records = [record(10, now_ms() - 1000), record(11, None), record(12, due), record(13, due)]
    await w.listener._dispatch(TP, records)
    assert w.redelivered.batches == [[10, 11]]
    assert w.consumer.calls == []  # nothing paused: the partition keeps being read
    await w.release()
    assert w.redelivered.batches == [[10, 11], [12, 13]]
    assert now_ms() >= due - 1  # not before it is due


async def test_a_head_due_late_does_not_hold_back_records_due_sooner(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    await w.listener._dispatch(TP, [record(20, now_ms() + 4_000), record(21, now_ms())])
    assert w.redelivered.batches == [[21]]
    w.redelivered.finish(21)
    # The commit stays at the waiting head: a crash now re-reads it, never skips it; the
    # metadata says 21 is done, so it is not sent twice.
    [commit] = w.listener.tracker.to_commit().values()
    assert commit.offset == 20
    assert offsetmap.decode(commit.metadata, 20) == {21}


async def test_a_due_time_is_never_believed_beyond_the_topic_delay(
    make_world: Callable[..., World],
) -> None:
    """A bad header or a replica with a fast clock says a day; the 5 s topic says 5 s."""
    w = make_world()
    a_day = now_ms() + 86_400_000
    await w.listener._dispatch(
        TP, [record(1, a_day), record(2, a_day, written_ms=now_ms() - 9_000)]
    )
    assert w.redelivered.batches == [[2]]  # written 9 s ago on a 5 s topic: due already
    [(due, offset, _)] = w.listener._waiting[TP]
    assert offset == 1
    assert due <= now_ms() + 5_000 + DUE_SLACK_MS


async def test_due_headers_mean_nothing_on_the_input_topic(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    tp = TopicPartition(INPUT_TOPIC, 0)
    w.listener.tracker.assign((INPUT_TOPIC, 0))
    await w.listener._dispatch(tp, [record(1, now_ms() + 60_000, topic=INPUT_TOPIC)])
    assert w.dispatched.batches == [[1]]
    assert w.redelivered.batches == []
    assert w.consumer.calls == []


async def test_a_full_lookahead_pauses_the_partition_until_records_fall_due(
    make_world: Callable[..., World],
) -> None:
    w = make_world(lookahead=4)
    soon, later = now_ms() + 100, now_ms() + 60_000
    await w.listener._dispatch(TP, [record(i, soon if i < 3 else later) for i in range(4)])
    assert w.consumer.calls == [("pause", TP)]
    await w.release()
    w.listener._resume_drained()
    assert w.consumer.calls == [("pause", TP), ("resume", TP)]
    assert w.redelivered.batches == [[0, 1, 2]]


async def test_a_lookahead_full_of_bytes_pauses_the_partition_too(
    make_world: Callable[..., World],
) -> None:
    """Bundled delay records carry many deliveries each: the count alone bounds no memory."""
    w = make_world(lookahead=1000)
    big = DELAY_LOOKAHEAD_BYTES // 2
    soon, later = now_ms() + 100, now_ms() + 60_000
    records = [
        replace(record(0, soon), value=b"x" * (big + 10)),
        replace(record(1, later), value=b"x"),
    ]
    await w.listener._dispatch(TP, records)
    assert w.consumer.calls == []  # half the bytes, and two records of a thousand
    await w.listener._dispatch(TP, [replace(record(2, later), value=b"x" * (big - 10))])
    assert w.consumer.calls == [("pause", TP)]
    await w.release()
    w.listener._resume_drained()  # record 0 fell due: back under half the bytes
    assert w.consumer.calls == [("pause", TP), ("resume", TP)]


async def test_a_drain_does_not_wait_for_records_not_yet_due(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    await w.listener._dispatch(TP, [record(30, now_ms()), record(31, now_ms() + 60_000)])
    w.redelivered.finish(30)
    started = time.monotonic()
    await w.listener.drain(grace=10)
    assert time.monotonic() - started < 1
    assert ("commit", {TP: (31, "")}) in w.consumer.calls  # the next reader takes it from there


async def test_a_revoke_forgets_the_waiting_records(make_world: Callable[..., World]) -> None:
    w = make_world()
    await w.listener._dispatch(TP, [record(40, now_ms() + 60_000)])
    await w.listener.revoked({TP})
    assert TP not in w.listener._waiting
    assert w.listener.tracker.unfinished((DELAY_TOPIC, 0)) == 0


async def test_backpressure_pauses_at_the_in_flight_bound_and_resumes_at_half(
    make_world: Callable[..., World],
) -> None:
    w = make_world(max_in_flight=4)
    await w.listener._dispatch(TP, [record(i, None) for i in range(4)])
    assert w.consumer.calls == [("pause", TP)]
    w.redelivered.finish(0)
    w.listener._resume_drained()
    assert w.consumer.calls == [("pause", TP)]  # 3 of 4 still in flight
    w.redelivered.finish(1, 2)
    w.listener._resume_drained()
    assert w.consumer.calls == [("pause", TP), ("resume", TP)]


async def test_records_finished_before_a_restart_are_not_done_again() -> None:
    consumer = FakeConsumer(TP)
    redelivered, dispatched = RecordingHandler(), RecordingHandler()
    metadata, _ = offsetmap.encode(50, {51, 53}, 4096)

    async def committed(tps: list[TopicPartition]) -> dict[TopicPartition, tuple[int, str]]:
        return {tp: (50, metadata) for tp in tps}

    config = KafkaConfig(retry_topic_prefix=PREFIX)
    listener = Listener(consumer, dispatched, redelivered, config, committed)  # type: ignore[arg-type]
    await listener.assigned({TP})
    await listener._dispatch(TP, [record(o, None) for o in range(50, 55)])
    assert redelivered.batches == [[50, 52, 54]]
    redelivered.finish(50, 52, 54)
    [commit] = listener.tracker.to_commit().values()
    assert (commit.offset, commit.metadata) == (55, "")


async def test_unreadable_commit_metadata_costs_duplicates_not_the_start() -> None:
    consumer = FakeConsumer(TP)
    redelivered = RecordingHandler()

    async def failing(tps: list[TopicPartition]) -> dict[TopicPartition, tuple[int, str]]:
        raise ConnectionError("coordinator away")

    config = KafkaConfig(retry_topic_prefix=PREFIX)
    listener = Listener(consumer, RecordingHandler(), redelivered, config, failing)  # type: ignore[arg-type]
    await listener.assigned({TP})
    await listener._dispatch(TP, [record(o, None) for o in range(50, 53)])
    assert redelivered.batches == [[50, 51, 52]]


async def test_no_record_of_a_new_partition_is_handed_on_before_it_is_prepared() -> None:
    """aiokafka may fetch for new partitions while the assignment callback runs: they stay
    paused until their finished offsets and the order ledger are known."""
    consumer = FakeConsumer(TP)
    preparing, prepared = asyncio.Event(), asyncio.Event()
    seen_while_preparing: list[list[tuple[Any, ...]]] = []

    async def prepare() -> None:
        seen_while_preparing.append(list(consumer.calls))
        preparing.set()
        await prepared.wait()

    config = KafkaConfig(retry_topic_prefix=PREFIX)
    listener = Listener(
        consumer,  # type: ignore[arg-type]
        RecordingHandler(),
        RecordingHandler(),
        config,
        prepare=prepare,
    )
    assigning = asyncio.create_task(listener.assigned({TP}))
    await asyncio.wait_for(preparing.wait(), 5)
    assert seen_while_preparing == [[("pause", TP)]]
    prepared.set()
    await assigning
    assert consumer.calls == [("pause", TP), ("resume", TP)]
