"""Keeps the attribute store current from `attributes.topic` (a compacted topic keyed by user).

A reader of its own: every partition assigned by hand, no consumer group, no commits. Where it
has read to lives with the data it wrote (`FollowedStore.apply`), so a restart resumes there and
a lost store is rebuilt from the topic. The dispatcher keeps asking the store and never learns
where the values came from; the cache in front of it is told which users changed.

At start it reads to the end offsets the topic had then (`caught_up`); the service joins its
consumer group only after that, so no delivery is built from a store that is still filling up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from consumer.attributes.records import Skip, decode, shown_key
from consumer.attributes.store import AttributesUnavailable, FollowedStore, Update
from consumer.observer import NO_OBSERVER, AttributesApplied, AttributesProgress, Observer

if TYPE_CHECKING:
    from consumer.config import ServiceConfig

log = structlog.get_logger(__name__)
T = TypeVar("T")

BATCH_RECORDS = 5_000  # records taken from one fetch and written in one store transaction
PROGRESS_SECONDS = 1.0  # how often progress (lag) is told to the observer
CATCH_UP_LOG_SECONDS = 5.0  # how often catching up says how far it got
PARTITIONS_CHECK_SECONDS = 30.0  # how often the topic is checked for added partitions
TOPIC_RETRY_SECONDS = 2.0  # how often a topic that does not exist yet is asked for again
_REPORTED_KEYS = 10_000  # keys whose skipped records were logged, remembered to log each once
_BACKOFF = (0.2, 5.0)  # first and longest wait before writing again to a store that failed


class Reader(Protocol):
    """The part of aiokafka's consumer the follower uses (tests hand in a fake)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    async def position(self, partition: TopicPartition) -> int: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...


class AttributeFollower:
    """Run with `start()`; `caught_up()` waits for the first full read, `stop()` ends it."""

    def __init__(
        self,
        topic: str,
        store: FollowedStore,
        reader: Reader,
        partitions: Callable[[], Awaitable[list[int]]],
        *,
        max_value_bytes: int,
        forget: Callable[[Iterable[str]], None] | None = None,
        observer: Observer = NO_OBSERVER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`partitions()` awaits the topic's partition numbers from the broker (it raises
        LookupError while the topic does not exist); `forget` is told every user written."""
        self.topic = topic
        self._store = store
        self._reader = reader
        self._partitions = partitions
        self._max_value_bytes = max_value_bytes
        self._forget = forget
        self._observer = observer
        self._clock = clock
        self._caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._assigned: list[TopicPartition] = []
        self._targets: dict[TopicPartition, int] = {}  # the ends at start, until reached
        self._records = 0  # read since start
        self._reported: OrderedDict[int, None] = OrderedDict()  # hashes of keys logged
        self._failing = False
        self._told = clock()  # when progress was last told

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"attributes:{self.topic}")

    async def stop(self) -> None:
        """End it; an error that ended it already was raised by `caught_up` or reported by
        whoever watches its task, not again here."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def caught_up(self, stop: asyncio.Event) -> bool:
        """Wait until the topic was read to its end as of start (True), or `stop` is set
        (False). A follower that failed raises its error here."""
        assert self._task is not None, "start() first"
        waits = [asyncio.ensure_future(e.wait()) for e in (self._caught_up, stop)]
        try:
            await asyncio.wait([*waits, self._task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if self._task.done() and not self._caught_up.is_set():
            self._task.result()  # raises what ended it
        return self._caught_up.is_set()

    async def _run(self) -> None:
        await self._reader.start()
        try:
            await self._assign(await self._topic_partitions())
            await self._follow()
        finally:
            with contextlib.suppress(Exception):
                await self._reader.stop()

    async def _topic_partitions(self) -> list[int]:
        said = False
        while True:
            try:
                return sorted(await self._partitions())
            except (LookupError, KafkaError) as exc:  # not created yet, or Kafka away
                if not said:
                    said = True
                    log.warning("attributes.topic_missing", topic=self.topic, error=str(exc))
                await asyncio.sleep(TOPIC_RETRY_SECONDS)  # being created? ask the broker again

    async def _assign(self, numbers: list[int]) -> None:
        """Every partition, each from where the store says it got to (from the start when it
        says nothing), and the end offsets of now as what catching up must reach."""
        stored = await self._patiently(lambda: self._store.positions(self.topic))
        self._assigned = [TopicPartition(self.topic, p) for p in numbers]
        self._reader.assign(self._assigned)
        fresh = [tp for tp in self._assigned if tp.partition not in stored]
        if fresh:
            await self._reader.seek_to_beginning(*fresh)
        for tp in self._assigned:
            if tp.partition in stored:
                self._reader.seek(tp, stored[tp.partition])
        ends = await self._reader.end_offsets(self._assigned)
        ahead = {tp.partition: end for tp, end in ends.items() if stored.get(tp.partition, 0) > end}
        if ahead:
            # The topic was re-created (or truncated): what the store holds is not from it.
            log.error(
                "attributes.store_ahead_of_topic",
                topic=self.topic,
                stored={p: stored[p] for p in ahead},
                ends=ahead,
                hint="rebuild the store (docs/runbook.md)",
            )
        self._targets = {tp: end for tp, end in ends.items() if stored.get(tp.partition, 0) < end}
        behind = sum(end - stored.get(tp.partition, 0) for tp, end in self._targets.items())
        log.info("attributes.catching_up", topic=self.topic, records_behind=behind)

    async def _follow(self) -> None:
        started = self._clock()
        logged = checked = started
        while True:
            batches = await self._reader.getmany(timeout_ms=100, max_records=BATCH_RECORDS)
            if batches:
                await self._write(batches)
            now = self._clock()
            if not self._caught_up.is_set() and await self._reached_targets():
                self._caught_up.set()
                log.info(
                    "attributes.caught_up",
                    topic=self.topic,
                    records=self._records,
                    seconds=round(now - started, 1),
                )
                self._told = now - PROGRESS_SECONDS  # tell it at once
            await self._progress(now)
            if not self._caught_up.is_set() and now - logged >= CATCH_UP_LOG_SECONDS:
                logged = now
                log.info(
                    "attributes.catching_up",
                    topic=self.topic,
                    records=self._records,
                    lag=await self._lag(),
                    per_second=round(self._records / max(now - started, 1e-9)),
                )
            if now - checked >= PARTITIONS_CHECK_SECONDS:
                checked = now
                await self._grow()

    async def _write(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        updates: list[Update] = []
        skipped: Counter[str] = Counter()
        positions: dict[int, int] = {}
        for tp, records in batches.items():
            for record in records:
                decoded = decode(record, self._max_value_bytes)
                if isinstance(decoded, Skip):
                    skipped[decoded.value] += 1
                    self._report(decoded, record)
                else:
                    updates.append(decoded)
            if records:
                positions[tp.partition] = records[-1].offset + 1
                self._records += len(records)
        applied = await self._patiently(lambda: self._store.apply(self.topic, updates, positions))
        if self._forget is not None and updates:
            # Superseded ones too: another replica wrote a newer value behind the cache.
            self._forget(u.user_id for u in updates)
        self._observer.emit(
            AttributesApplied(
                applied.stored, applied.deleted, applied.superseded, tuple(skipped.items())
            )
        )

    def _report(self, reason: Skip, record: Any) -> None:
        """Logged once per key (of the last few thousand): a producer that keeps writing one
        bad user costs one line, not one per record."""
        key = record.key
        seen = hash(key)  # not the key: a hostile one may be megabytes long
        if seen in self._reported:
            self._reported.move_to_end(seen)
            return
        self._reported[seen] = None
        if len(self._reported) > _REPORTED_KEYS:
            self._reported.popitem(last=False)
        log.warning(
            "attributes.record_skipped",
            topic=self.topic,
            reason=reason.value,
            key=shown_key(key),
            partition=record.partition,
            offset=record.offset,
        )

    async def _patiently(self, write: Callable[[], Awaitable[T]]) -> T:
        """`write()` until the store takes it: an unavailable store is waited for, backing
        off, said once when it starts failing and once when it recovers."""
        delay = _BACKOFF[0]
        while True:
            try:
                result = await write()
            except AttributesUnavailable as exc:
                if not self._failing:
                    self._failing = True
                    log.warning("attributes.store_failing", topic=self.topic, error=str(exc)[:300])
                await self._progress(self._clock())  # the lag stays in sight meanwhile
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF[1])
                continue
            if self._failing:
                self._failing = False
                log.info("attributes.store_recovered", topic=self.topic)
            return result

    async def _reached_targets(self) -> bool:
        for tp in list(self._targets):
            if await self._reader.position(tp) >= self._targets[tp]:
                del self._targets[tp]
        return not self._targets

    async def _lag(self) -> int:
        lag = 0
        for tp in self._assigned:
            end = self._reader.highwater(tp)
            if end is None:
                end = self._targets.get(tp)
            if end is not None:
                lag += max(0, end - await self._reader.position(tp))
        return lag

    async def _progress(self, now: float) -> None:
        """Tell the records read and the lag, at most once per PROGRESS_SECONDS."""
        if now - self._told < PROGRESS_SECONDS or not self._assigned:
            return
        self._told = now
        lag = await self._lag()
        self._observer.emit(AttributesProgress(self._records, lag, self._caught_up.is_set()))

    async def _grow(self) -> None:
        """Partitions added to the topic are read too, from their start. Assigning anew
        forgets every position, so the others are put back where they were."""
        numbers = self._reader.partitions_for_topic(self.topic) or set()
        known = {tp.partition for tp in self._assigned}
        if not numbers - known:
            return
        where = {tp: await self._reader.position(tp) for tp in self._assigned}
        self._assigned = [TopicPartition(self.topic, p) for p in sorted(numbers | known)]
        self._reader.assign(self._assigned)
        for tp in self._assigned:
            if tp in where:
                self._reader.seek(tp, where[tp])
        added = [tp for tp in self._assigned if tp not in where]
        await self._reader.seek_to_beginning(*added)
        added_numbers = [tp.partition for tp in added]
        log.info("attributes.partitions_added", topic=self.topic, added=added_numbers)


def open_follower(
    config: ServiceConfig,
    store: FollowedStore,
    forget: Callable[[Iterable[str]], None] | None = None,
    observer: Observer = NO_OBSERVER,
    environ: Mapping[str, str] | None = None,
) -> AttributeFollower | None:
    """The follower of `attributes.topic` on the service's cluster; None without a topic."""
    topic = config.attributes.topic
    if topic is None:
        return None
    from aiokafka import AIOKafkaConsumer

    from consumer.kafkatools import client_options, topic_partitions

    options = client_options(config.kafka, environ)
    reader = AIOKafkaConsumer(
        **options,
        group_id=None,  # no group: every replica reads every partition
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # an aborted transaction's values never count
        fetch_max_wait_ms=100,  # an update waits at most this long for the next fetch
        metadata_max_age_ms=60_000,  # partitions added to the topic are seen within a minute
    )

    async def partitions() -> list[int]:
        return [tp.partition for tp in await topic_partitions(topic, **options)]

    return AttributeFollower(
        topic,
        store,
        reader,
        partitions,
        max_value_bytes=config.attributes.max_value_bytes,
        forget=forget,
        observer=observer,
    )
