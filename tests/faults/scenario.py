"""What every fault scenario shares: the fleet's config, the events, and what must arrive."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from consumer.delivery import delivery_id
from tests.integration.support import Setup, channel, create_topic, event, write_config

from .receiver import FaultReceiver

CHANNELS = ["alpha", "beta", "gamma"]
INPUT_PARTITIONS = 6
EVENTS = 20_000
REPLICAS = 3

# Tight on purpose, so the duplicate bound means something: few records unfinished per
# partition, frequent commits.
KAFKA = {
    "max_in_flight_per_partition": 200,
    "max_poll_records": 100,
    "delay_lookahead_records": 200,
    "commit_interval_ms": 200,
    "shutdown_grace_seconds": 20,
}
RETRY = {
    "quick_attempts": 3,
    "schedule_seconds": [1, 2, 5, 10],
    # A receiver that cut connections is probed again after a second, not the default 30 s.
    "circuit_breaker": {"failures": 5, "cooldown_seconds": 1, "max_cooldown_seconds": 2},
}
# Longer than any scripted stall, so a held request is a slow answer, not a timeout.
CHANNEL_TIMEOUT_SECONDS = 15
CONCURRENCY = 16  # requests in flight per channel and replica


@dataclass(frozen=True)
class Stream:
    """The events of a scenario and the (event, channel) pairs they must become. Event i goes
    to input partition i % INPUT_PARTITIONS."""

    events: list[dict[str, Any]]
    deliveries: list[list[str]]  # per event: its delivery id on each channel

    @classmethod
    def of(cls, count: int = EVENTS) -> Stream:
        events = [event("c", f"u-{i}") for i in range(count)]
        ids = [[delivery_id(name, [e["event_id"]]) for name in CHANNELS] for e in events]
        return cls(events, ids)

    @staticmethod
    def partition(index: int) -> int:
        return index % INPUT_PARTITIONS

    @cached_property
    def partition_of(self) -> dict[str, int]:
        """Delivery id -> the input partition of its event."""
        return {d: self.partition(i) for i, ids in enumerate(self.deliveries) for d in ids}

    @cached_property
    def expected(self) -> set[str]:
        return set(self.partition_of)


def setup_for(
    bootstrap: str, receiver: FaultReceiver, folder: Path, redis_url: str | None
) -> tuple[Setup, Path]:
    """A fresh topic and group, configured like the fleet; the written config's path."""
    # The fault receiver has what Setup and channel() use of a Receiver: url() and secrets.
    channels = [
        channel(receiver, n, timeout_seconds=CHANNEL_TIMEOUT_SECONDS, max_concurrency=CONCURRENCY)  # type: ignore[arg-type]
        for n in CHANNELS
    ]
    setup = Setup(
        bootstrap,
        receiver,  # type: ignore[arg-type]
        channels,
        {"c": CHANNELS},
        kafka=dict(KAFKA),
        retry=dict(RETRY),
        log_level="info",  # partitions.assigned tells which replica owns what
        tmp=str(folder),
        redis_url=redis_url,
    )
    return setup, write_config(setup, folder)


async def create_input(setup: Setup) -> None:
    """Before the fleet starts, or its first replica would create it with its own default."""
    await create_topic(setup.bootstrap, setup.topic, INPUT_PARTITIONS)


async def produce(setup: Setup, stream: Stream) -> list[int]:
    """Every event of the stream, to its partition; the offset each one got. Whole batches
    built by hand: cheap enough not to slow the receiver that shares this process."""
    producer = AIOKafkaProducer(
        bootstrap_servers=setup.bootstrap, acks="all", max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        batches: list[tuple[list[int], asyncio.Future[Any]]] = []  # (its events, acknowledged)
        for partition in range(INPUT_PARTITIONS):
            mine = range(partition, len(stream.events), INPUT_PARTITIONS)
            while mine:
                batch = producer.create_batch()
                taken = 0
                for i in mine:
                    record = stream.events[i]
                    key, value = record["user_id"].encode(), orjson.dumps(record)
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        break  # full
                    taken += 1
                sent = await producer.send_batch(batch, setup.topic, partition=partition)
                batches.append((list(mine[:taken]), sent))
                mine = mine[taken:]
        offsets = [0] * len(stream.events)
        for members, sent in batches:
            base = (await sent).offset  # a batch's records get consecutive offsets
            for position, i in enumerate(members):
                offsets[i] = base + position
        return offsets
    finally:
        await producer.stop()
