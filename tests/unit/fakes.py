"""In-memory stand-ins shared by the unit tests: Kafka records, the consumer the listener
steers, and a lane that only records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import RebalanceInProgressError

from consumer.delivery import Delivery


@dataclass(frozen=True)
class Record:
    """The fields of a Kafka record that the consumer reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    key: bytes | None = None
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))  # ms, when written


class RecordingLane:
    """Keeps what it is given, in order, and sends nothing."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def submit(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def hold_for(self) -> float | None:
        return self.held

    held: float | None = None  # set by a test: the circuit is open for this long


class FakeOwner(list[int]):
    """A partition owner that records the offsets it was told are finished."""

    revoked = False

    def finished(self, offset: int) -> None:
        self.append(offset)


class FakeConsumer:
    """The part of aiokafka's consumer the listener uses; records what it is asked to do.
    `ends` and `positions` are the broker's figures; a commit fails while `fail_commits`, and
    takes `commit_seconds` (the broker's answer time) when set."""

    def __init__(self, *assigned: TopicPartition) -> None:
        self.assigned = set(assigned)
        self.calls: list[tuple[Any, ...]] = []
        self.ends: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.fail_commits = False
        self.commit_seconds = 0.0

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        assert tp in self.assigned, "aiokafka asserts this too"
        return self.ends.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def pause(self, *tps: TopicPartition) -> None:
        self.calls.append(("pause", *tps))

    def resume(self, *tps: TopicPartition) -> None:
        self.calls.append(("resume", *tps))

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.commit_seconds:
            await asyncio.sleep(self.commit_seconds)  # the broker's answer time, scripted
        if self.fail_commits:
            raise RebalanceInProgressError()
        self.calls.append(("commit", offsets))
