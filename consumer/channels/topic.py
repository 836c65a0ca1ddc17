"""The channel-state topic on Kafka: created when missing, read to its end, then followed.

A follower is a reader of its own (every partition assigned, no consumer group), so each
replica sees every record; Kafka hands a new record to a waiting fetch within half a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from consumer.config import ServiceConfig
from consumer.kafkatools import client_options, stop_consumer, topic_partitions
from consumer.observer import Observer
from consumer.topics import ensure_compacted

from .records import ChannelRecord, decode
from .reports import CircuitReports
from .state import ChannelState

log = structlog.get_logger(__name__)

CATCH_UP_SECONDS = 60.0  # reading a small compacted topic to its end takes far less
CLOSE_SECONDS = 5.0  # at a stop, what is still being written gets this long


async def ensure_channels_topic(
    config: ServiceConfig, environ: Mapping[str, str] | None = None
) -> None:
    """One partition: the records of a channel keep their order, and they are few."""
    await ensure_compacted(config.kafka, config.kafka.channels_topic, environ)


class ChannelStateFollower:
    """Keeps a `ChannelState` current from the topic until closed."""

    def __init__(
        self, config: ServiceConfig, state: ChannelState, environ: Mapping[str, str] | None = None
    ) -> None:
        self._topic = config.kafka.channels_topic
        self._state = state
        self._consumer = AIOKafkaConsumer(
            **client_options(config.kafka, environ),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=500,
        )
        self._options = client_options(config.kafka, environ)
        self._task: asyncio.Task[None] | None = None
        self._unreadable = 0

    async def start(self) -> None:
        """Read the topic to its end (the state as of now), then follow it in the background."""
        tps = await topic_partitions(self._topic, **self._options)
        await self._consumer.start()
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        await asyncio.wait_for(self._catch_up(tps), CATCH_UP_SECONDS)
        self._state.caught_up()
        self._task = asyncio.create_task(self._follow(), name="channel-state")

    async def _catch_up(self, tps: list[TopicPartition]) -> None:
        ends = await self._consumer.end_offsets(tps)
        while [tp for tp in tps if await self._consumer.position(tp) < ends[tp]]:
            self._take(await self._consumer.getmany(timeout_ms=500))

    async def _follow(self) -> None:
        while True:
            try:
                self._take(await self._consumer.getmany(timeout_ms=1000))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the follower must outlive a broker that comes and goes
                log.warning("channel_state.read_failed", error=repr(exc)[:300])
                await asyncio.sleep(1.0)

    def _take(self, batches: dict[TopicPartition, list[Any]]) -> None:
        for records in batches.values():
            for record in records:
                key = (record.key or b"").decode("utf-8", "replace")
                if record.value is None:
                    self._state.apply(key, None)
                    continue
                parsed = decode(record.value)
                if parsed is None:
                    self._unreadable += 1
                    if self._unreadable == 1:  # once: it is someone else's record
                        log.warning("channel_state.unreadable", topic=self._topic, key=key)
                    continue
                self._state.apply(key, parsed)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await stop_consumer(self._consumer)


async def read_state(config: ServiceConfig) -> ChannelState:
    """The topic's records up to now, for a command; empty when the topic does not exist."""
    state = ChannelState()
    try:
        await topic_partitions(config.kafka.channels_topic, **client_options(config.kafka))
    except LookupError:
        return state
    follower = ChannelStateFollower(config, state)
    try:
        await follower.start()
    finally:
        await follower.close()
    return state


async def write_record(config: ServiceConfig, record: ChannelRecord) -> None:
    """Write one record and wait until every in-sync replica has it."""
    await ensure_channels_topic(config)
    producer = AIOKafkaProducer(**client_options(config.kafka), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            config.kafka.channels_topic, record.encode(), key=record.key().encode()
        )
    finally:
        await producer.stop()


class Publisher:
    """Writes this replica's records in the background (a 410, its circuit changes)."""

    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._writes: set[asyncio.Task[None]] = set()

    def __call__(self, record: ChannelRecord) -> None:
        task = asyncio.get_running_loop().create_task(
            self._write(record.key().encode(), record.encode())
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: bytes, value: bytes | None) -> None:
        """Until written: a 410 that never reaches the topic would leave the other replicas
        sending (the producer retries within each try; this outlasts a longer outage)."""
        attempt = 0
        while True:
            try:
                await self._producer.send_and_wait(self._topic, value, key=key)
                return
            except KafkaError as exc:
                attempt += 1
                log.warning(
                    "channel_state.write_failed",
                    key=key.decode(),
                    attempt=attempt,
                    error=repr(exc)[:300],
                )
                await asyncio.sleep(min(10.0, 0.5 * 2**attempt))

    async def remove(self, keys: list[str]) -> None:
        """Tombstones: the records of these keys go (this replica's reports, at its stop)."""
        for key in keys:
            task = asyncio.get_running_loop().create_task(self._write(key.encode(), None))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        if not self._writes:
            return
        _, unwritten = await asyncio.wait(set(self._writes), timeout=CLOSE_SECONDS)
        for task in unwritten:  # the broker is away: a 410 is found again after the restart
            task.cancel()
        await asyncio.gather(*unwritten, return_exceptions=True)


async def open_channel_state(
    config: ServiceConfig,
    producer: Any,
    observer: Observer,
    stack: AsyncExitStack,
    on_reset: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
) -> ChannelState:
    """The deployment's channel state, read to its end (a channel disabled before this start
    stays disabled) and then followed; this replica's circuit changes are reported to it."""
    await ensure_channels_topic(config, environ)
    publisher = Publisher(producer, config.kafka.channels_topic)
    stack.push_async_callback(publisher.close)  # after the tombstones below, before the producer
    state = ChannelState(observer, publisher, on_reset)
    follower = ChannelStateFollower(config, state, environ)
    stack.push_async_callback(follower.close)
    await follower.start()
    reports = CircuitReports(state)
    observer.add(reports)

    async def remove_reports() -> None:
        await publisher.remove(reports.keys())

    stack.push_async_callback(remove_reports)
    return state
