"""Delay topics in the listener: only due records are handed on, and a partition whose head is
not yet due sleeps until it is, without holding the others. A fake consumer stands in for Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import TopicPartition

from consumer.config import KafkaConfig
from consumer.delaypath import DUE_HEADER
from consumer.delivery import Source
from consumer.listener import Listener

from .fakes import Record

if TYPE_CHECKING:
    from .conftest import WaitUntil

DELAY_TOPIC = "webhook-retry-5s"
INPUT_TOPIC = "user-threshold-events"
TP = TopicPartition(DELAY_TOPIC, 0)


class FakeConsumer:
    """Records what the listener asks of Kafka, and when."""

    def __init__(self, *assigned: TopicPartition) -> None:
        self.assigned = set(assigned)
        self.calls: list[tuple[Any, ...]] = []
        self.resumed_at: list[float] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", tp, offset))

    def pause(self, *tps: TopicPartition) -> None:
        self.calls.append(("pause", *tps))

    def resume(self, *tps: TopicPartition) -> None:
        self.calls.append(("resume", *tps))
        self.resumed_at.append(time.time())

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.calls.append(("commit", offsets))

    @property
    def resumes(self) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == "resume"]


@dataclass
class RecordingHandler:
    batches: list[list[int]] = field(default_factory=list)
    on_finished: Callable[[Source], None] | None = None

    async def dispatch(self, records: Sequence[Any], on_finished: Callable[[Source], None]) -> None:
        self.batches.append([r.offset for r in records])
        self.on_finished = on_finished

    def flush(self) -> None:
        pass


def now_ms() -> int:
    return int(time.time() * 1000)


def record(offset: int, due_ms: int | None, topic: str = DELAY_TOPIC) -> Record:
    headers = [] if due_ms is None else [(DUE_HEADER, str(due_ms).encode())]
    return Record(topic, 0, offset, b"{}", [("channel", b"crm"), *headers])


@dataclass
class World:
    listener: Listener
    consumer: FakeConsumer
    handler: RecordingHandler


@pytest.fixture
def make_world() -> Callable[..., World]:
    def make(max_in_flight: int = 100) -> World:
        consumer, handler = FakeConsumer(TP), RecordingHandler()
        config = KafkaConfig(max_in_flight_per_partition=max_in_flight)
        handlers = {DELAY_TOPIC: handler, INPUT_TOPIC: handler}
        listener = Listener(consumer, handlers, {DELAY_TOPIC}, config)
        listener.tracker.assign((DELAY_TOPIC, 0))
        return World(listener, consumer, handler)

    return make


async def test_only_the_due_prefix_goes_on_and_the_partition_sleeps_until_due(
    make_world: Callable[..., World], wait_until: WaitUntil
) -> None:
    w = make_world()
    due = now_ms() + 100
    records = [record(10, now_ms() - 1000), record(11, None), record(12, due), record(13, due)]
    await w.listener._dispatch(TP, records)
    assert w.handler.batches == [[10, 11]]
    assert w.consumer.calls == [("seek", TP, 12), ("pause", TP)]
    await wait_until(lambda: w.consumer.resumes != [], what="partition resumed")
    assert w.consumer.resumes == [("resume", TP)]
    assert w.consumer.resumed_at[0] * 1000 >= due - 1  # not before it is due


async def test_a_head_not_yet_due_dispatches_nothing(make_world: Callable[..., World]) -> None:
    w = make_world()
    await w.listener._dispatch(TP, [record(20, now_ms() + 60_000), record(21, now_ms())])
    assert w.handler.batches == []
    assert w.consumer.calls == [("seek", TP, 20), ("pause", TP)]
    assert w.listener.tracker.total_unfinished() == 0


async def test_due_headers_mean_nothing_on_the_input_topic(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    tp = TopicPartition(INPUT_TOPIC, 0)
    w.listener.tracker.assign((INPUT_TOPIC, 0))
    await w.listener._dispatch(tp, [record(1, now_ms() + 60_000, topic=INPUT_TOPIC)])
    assert w.handler.batches == [[1]]
    assert w.consumer.calls == []


async def test_no_wake_up_while_draining(
    make_world: Callable[..., World], wait_until: WaitUntil
) -> None:
    w = make_world()
    await w.listener._dispatch(TP, [record(30, now_ms() + 50)])
    await w.listener.drain(grace=0.1)
    await wait_until(lambda: not w.listener._sleeping, what="wake-up timer fired")
    assert w.consumer.resumes == []


async def test_no_wake_up_while_paused_for_backpressure(
    make_world: Callable[..., World], wait_until: WaitUntil
) -> None:
    w = make_world(max_in_flight=1)
    await w.listener._dispatch(TP, [record(40, now_ms() - 1), record(41, now_ms() + 50)])
    assert w.handler.batches == [[40]]
    assert w.consumer.calls[:2] == [("seek", TP, 41), ("pause", TP)]
    await wait_until(lambda: not w.listener._sleeping, what="wake-up timer fired")
    assert w.consumer.resumes == []  # record 40 is still in flight
    assert w.handler.on_finished is not None
    w.handler.on_finished(Source(DELAY_TOPIC, 0, 40))
    w.listener._resume_drained()
    assert w.consumer.resumes == [("resume", TP)]


async def test_drained_but_not_yet_due_waits_for_the_due_time(
    make_world: Callable[..., World], wait_until: WaitUntil
) -> None:
    w = make_world(max_in_flight=1)
    due = now_ms() + 100
    await w.listener._dispatch(TP, [record(50, now_ms() - 1), record(51, due)])
    assert w.handler.on_finished is not None
    w.handler.on_finished(Source(DELAY_TOPIC, 0, 50))
    w.listener._resume_drained()
    assert w.consumer.resumes == []  # in-flight budget free again, but the head is not due
    await wait_until(lambda: w.consumer.resumes != [], what="partition resumed")
    assert w.consumer.resumes == [("resume", TP)]
    assert w.consumer.resumed_at[0] * 1000 >= due - 1
