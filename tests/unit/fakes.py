"""In-memory stand-ins shared by the unit tests: Kafka records and a lane that only records."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

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
