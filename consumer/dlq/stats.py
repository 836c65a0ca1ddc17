"""`dlq stats`: dead letters counted by channel and reason, and the replays on record."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from consumer.config import ServiceConfig
from consumer.kafkaprobe import probe
from consumer.kafkatools import client_options, stop_consumer, topic_partitions

from .progress import Progress, load_progress
from .reading import letter_consumer, read_letters


@dataclass
class Row:
    count: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None


@dataclass
class Stats:
    rows: dict[tuple[str, str], Row]
    replays: list[Progress]


async def stats(config: ServiceConfig) -> Stats:
    await probe(config.kafka)
    consumer = letter_consumer(config)
    await consumer.start()
    rows: dict[tuple[str, str], Row] = defaultdict(Row)
    try:
        tps = await topic_partitions(config.kafka.dead_letter_topic, **client_options(config.kafka))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async for item in read_letters(consumer, ends):
            letter = item.letter
            key = (
                ("(unreadable)", "-")
                if letter is None
                else (letter.channel or "-", letter.reason.kind)
            )
            row = rows[key]
            row.count += 1
            if letter is not None:
                at = letter.dead_lettered_at
                row.oldest = at if row.oldest is None else min(row.oldest, at)
                row.newest = at if row.newest is None else max(row.newest, at)
    finally:
        await stop_consumer(consumer)
    replays = await load_progress(config)
    return Stats(dict(rows), sorted(replays.values(), key=lambda p: p.updated_at))
