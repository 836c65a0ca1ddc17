"""Reading the dead-letter topic up to fixed end offsets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from consumer.config import ServiceConfig
from consumer.deadletter import DeadLetter
from consumer.kafkatools import client_options
from consumer.topics import DEAD_LETTER_MAX_BYTES


@dataclass(frozen=True, slots=True)
class Letter:
    tp: TopicPartition
    offset: int
    letter: DeadLetter | None  # None: not a dead-letter record at all


async def read_letters(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
) -> AsyncIterator[Letter]:
    """Every record up to the given end offsets: new letters do not count, so a read
    terminates even while the service keeps dead-lettering."""
    pending = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= ends[tp]:
                    break
                try:
                    letter = DeadLetter.model_validate_json(record.value or b"")
                except ValidationError:
                    letter = None
                yield Letter(tp, record.offset, letter)
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}


def letter_consumer(config: ServiceConfig) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(config.kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=DEAD_LETTER_MAX_BYTES * 2,
        max_partition_fetch_bytes=DEAD_LETTER_MAX_BYTES,
    )
