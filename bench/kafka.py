"""Topics, pre-loading, a paced producer and committed offsets, with aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.kafkatools import stop_consumer, topic_partitions

Record = tuple[bytes | None, bytes]  # (key, value)
# BENCH_TRACEPARENT=1: every pre-loaded record carries a W3C traceparent (a trace of its own,
# sampled), to measure what passing trace context on costs.
TRACED = os.environ.get("BENCH_TRACEPARENT") == "1"


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    async with admin_client(bootstrap) as admin:
        await admin.create_topics([NewTopic(topic, partitions, 1)])


async def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Every topic whose name starts with `prefix`: the harness leaves the shared broker clean."""
    async with admin_client(bootstrap) as admin:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    return doomed


def _producer(bootstrap: str, **options: object) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **options)  # type: ignore[arg-type]


async def preload(bootstrap: str, topic: str, records: Sequence[Record]) -> float:
    """Write `records` as fast as the broker takes them; returns the seconds it took."""
    started = time.monotonic()
    producer = _producer(bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = []
        for key, value in records:
            headers = _traceparent() if TRACED else None
            pending.append(await producer.send(topic, value, key=key, headers=headers))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


def _traceparent() -> list[tuple[str, bytes]]:
    return [("traceparent", f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01".encode())]


async def paced(
    bootstrap: str,
    topic: str,
    rate: float,
    seconds: float,
    record: Callable[[int], Record],
    sent_at: Callable[[int, int], None],
) -> int:
    """Produce `record(i)` at `rate` per second for `seconds`; `sent_at(i, unix_ns)` is called
    just before each send. Returns how many were sent."""
    producer = _producer(bootstrap, linger_ms=0)
    await producer.start()
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        started = loop.time()
        futures = []
        while (elapsed := loop.time() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                key, value = record(sent)
                sent_at(sent, time.time_ns())
                futures.append(await producer.send(topic, value, key=key))
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def end_offsets(bootstrap: str, topic: str) -> int:
    """The number of records in `topic` (sum of its partitions' end offsets)."""
    partitions = await topic_partitions(topic, bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await stop_consumer(consumer)


async def committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on `topic` (0 before its first commit)."""
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic)
