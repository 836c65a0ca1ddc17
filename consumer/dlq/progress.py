"""Replay progress: one entry per replay request in a compacted topic of the deployment."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from consumer.config import ServiceConfig
from consumer.kafkatools import client_options, stop_consumer, topic_partitions
from consumer.topics import ensure_compacted

from .filters import Filters, Request
from .reading import letter_consumer


@dataclass(slots=True)
class Progress:
    """One replay request's entry in the progress topic."""

    request: Request
    filters: Filters
    ends: dict[int, int]  # the dead-letter topic's end offsets at the first run
    next: dict[int, int]  # per partition, the first offset not replayed yet
    replayed: int = 0
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def finished(self) -> bool:
        return all(self.next.get(p, 0) >= end for p, end in self.ends.items())

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "request": {
                    **self.request.words(),
                    **({"ignore_expiry": True} if self.request.ignore_expiry else {}),
                },
                "since": self.filters.since,
                "until": self.filters.until,
                "ends": self.ends,
                "next": self.next,
                "replayed": self.replayed,
                "updated_at": self.updated_at,
            },
            option=orjson.OPT_NON_STR_KEYS,
        )

    @classmethod
    def decode(cls, value: bytes) -> Progress:
        data = orjson.loads(value)
        request = Request(**data["request"])
        when = {
            k: None if data[k] is None else datetime.fromisoformat(data[k])
            for k in ("since", "until")
        }
        return cls(
            request=request,
            filters=Filters(request.channel, request.reason, when["since"], when["until"]),
            ends={int(p): o for p, o in data["ends"].items()},
            next={int(p): o for p, o in data["next"].items()},
            replayed=data["replayed"],
            updated_at=datetime.fromisoformat(data["updated_at"]),
        )


def progress_topic(config: ServiceConfig) -> str:
    return f"{config.kafka.dead_letter_topic}.replays"


async def forget_finished(config: ServiceConfig) -> int:
    """Remove the progress entries of finished replays; their commands then start over."""
    finished = [k for k, p in (await load_progress(config)).items() if p.finished]
    if finished:
        producer = AIOKafkaProducer(**client_options(config.kafka), acks="all")
        await producer.start()
        try:
            for key in finished:
                await producer.send_and_wait(progress_topic(config), None, key=key.encode())
        finally:
            await producer.stop()
    return len(finished)


async def load_progress(config: ServiceConfig) -> dict[str, Progress]:
    """Every replay's latest entry (a compacted topic holds few, small records)."""
    topic = progress_topic(config)
    try:
        tps = await topic_partitions(topic, **client_options(config.kafka))
    except LookupError:
        return {}
    consumer = letter_consumer(config)
    await consumer.start()
    entries: dict[str, Progress] = {}
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while pending:
            for records in (await consumer.getmany(*pending, timeout_ms=500)).values():
                for record in records:
                    key = (record.key or b"").decode()
                    if record.value is None:
                        entries.pop(key, None)
                    else:
                        entries[key] = Progress.decode(record.value)
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await stop_consumer(consumer)
    return entries


async def ensure_progress_topic(config: ServiceConfig) -> None:
    await ensure_compacted(config.kafka, progress_topic(config))
