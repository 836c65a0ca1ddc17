"""In-memory stand-ins shared by the unit tests: Kafka records and a lane that only records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consumer.delivery import Delivery


@dataclass(frozen=True)
class Record:
    """The fields of a Kafka record that the consumer reads."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


class RecordingLane:
    """Keeps what it is given, in order, and sends nothing."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def submit(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
