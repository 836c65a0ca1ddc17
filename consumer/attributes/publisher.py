"""`attributes publish`: a JSON-lines file of users written to `attributes.topic`.

Each line `{"user_id": ..., "attributes": {...} | null}` becomes one record keyed by the user id,
whose value is the attributes object (null: a tombstone, which deletes the user). Running replicas
pick them up through their followers; a new replica reads them at start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from consumer.attributes.importer import JsonLines
from consumer.config import ServiceConfig
from consumer.kafkatools import client_options
from consumer.topics import ensure_topics


@dataclass(frozen=True, slots=True)
class PublishReport:
    published: int  # records written, tombstones included
    deleted: int  # of which tombstones
    rejected: int  # lines that name no user or hold no object (nor null)
    examples: tuple[str, ...]


async def publish_jsonl(
    config: ServiceConfig,
    path: Path,
    *,
    progress: bool = True,
    environ: Mapping[str, str] | None = None,
    batch_size: int = 1000,
) -> PublishReport:
    """Write every good line to `attributes.topic` (acknowledged by every in-sync replica);
    bad lines are reported, not fatal. The topic is created, compacted, when missing and
    `kafka.create_topics` allows it."""
    topic = config.attributes.topic
    if topic is None:
        raise ValueError("attributes.topic is not set in the config")
    if config.kafka.create_topics:
        await ensure_topics(config.kafka, [], environ, compacted=[topic])
    producer = AIOKafkaProducer(**client_options(config.kafka, environ), acks="all", linger_ms=20)
    await producer.start()
    lines = JsonLines(path, batch_size=batch_size, tombstones=True)
    published = deleted = 0
    try:
        async for batch in lines.batches("publishing", progress):
            acks: list[asyncio.Future[Any]] = []
            for user_id, attributes in batch:
                value = None if attributes is None else orjson.dumps(attributes)
                acks.append(await producer.send(topic, value, key=user_id.encode()))
            await asyncio.gather(*acks)
            published += len(batch)
            deleted += sum(attributes is None for _, attributes in batch)
    finally:
        await producer.stop()
    return PublishReport(published, deleted, lines.rejected, tuple(lines.examples))
