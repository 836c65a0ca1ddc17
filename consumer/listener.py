"""The Kafka side: fetch, hand records to the dispatcher, pause when full, commit what is done.

Delivery logic never appears here, and nothing outside this module touches the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .config import KafkaConfig
from .delaypath import due_ms_of, level_of, topic_pattern
from .delivery import Owner
from .dispatcher import RecordLike
from .kafka_health import kafka_health
from .observer import (
    NO_OBSERVER,
    CommitFailed,
    Committed,
    Consumed,
    InputLag,
    Lifecycle,
    Observer,
    OffsetsTruncated,
    PartitionsOwned,
    Stage,
)
from .offsets import OffsetTracker, PartitionState
from .resting import Resting

log = structlog.get_logger(__name__)

Key = tuple[str, int]
# A due time is never believed beyond the record's topic delay plus this, counted from when the
# record was written or first read: a replica with a fast clock, or a bad header, cannot hold a
# delay partition for longer than the delay it stands for.
DUE_SLACK_MS = 2_000
# Bytes of delay records held per partition before their due time, beside the count
# (kafka.delay_lookahead_records): a record of a bundle carries many deliveries, so a count
# alone would not bound the memory.
DELAY_LOOKAHEAD_BYTES = 4 * 1024 * 1024


class Handler(Protocol):
    """Turns a topic's records into work; `owner` hears of each record when it is done."""

    async def dispatch(self, records: Sequence[RecordLike], owner: Owner) -> None: ...

    def flush(self) -> None: ...


def _key(tp: TopicPartition) -> Key:
    return (tp.topic, tp.partition)


def _size(record: Any) -> int:
    return len(record.value or b"")


# What the group committed for some partitions: {partition: (offset, metadata)}.
CommittedLoader = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, tuple[int, str]]]]


class Listener:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        dispatcher: Handler,
        redelivery: Handler,
        config: KafkaConfig,
        load_committed: CommittedLoader | None = None,
        observer: Observer = NO_OBSERVER,
        prepare: Callable[[], Awaitable[None]] | None = None,
        levels: Sequence[float] = (),
    ) -> None:
        """`prepare` is awaited after each assignment, before any record of the new
        partitions is handed on (the order ledger reads to its end); `levels` are the delay
        levels of the retry schedule (their delay partitions rest while idle)."""
        self._consumer = consumer
        self._dispatcher = dispatcher
        self._redelivery = redelivery
        self._config = config
        self._load_committed = load_committed
        self._observer = observer
        self._prepare = prepare
        self._owned: set[int] = set()  # input partitions assigned to this member
        self._progress = asyncio.Event()  # set whenever some record finished
        self._tracker = OffsetTracker(on_progress=self._progress.set)
        self._paused: set[TopicPartition] = set()  # too much of it unfinished
        # Per delay partition: records read ahead of their due time, as (due ms, offset, record).
        self._waiting: dict[TopicPartition, list[tuple[int, int, Any]]] = {}
        self._levels: dict[str, float | None] = {}  # delay topic -> its delay, once parsed
        self._draining = False
        self._resume_below = max(1, config.max_in_flight_per_partition // 2)
        self._resting = Resting(
            consumer, levels, self._level, self._position, lambda tp: tp in self._paused
        )

    @property
    def tracker(self) -> OffsetTracker:
        return self._tracker

    def subscribe(self) -> None:
        """The input topic and every delay topic of this deployment that exists, retired
        levels included: records waiting on a level a schedule change removed still come back."""
        kafka = self._config
        pattern = f"^(?:{re.escape(kafka.topic)}|{topic_pattern(kafka.retry_topic_prefix)})$"
        self._consumer.subscribe(pattern=pattern, listener=_Rebalance(self))

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and dispatch until `stop` is set, then drain within the grace period."""
        loop = asyncio.get_running_loop()
        interval = self._config.commit_interval_ms / 1000
        next_commit = loop.time() + interval
        while not stop.is_set():
            # Keep polling even when every partition is paused: that keeps this member in the
            # group however slow the deliveries are (aiokafka #848).
            batches = await self._consumer.getmany(
                timeout_ms=100, max_records=self._config.max_poll_records
            )
            if batches:
                kafka_health.ok()  # an empty result proves nothing: it is also what an outage gives
            for tp, records in batches.items():
                await self._dispatch(tp, records)
            await self._release_due()
            self._resume_drained()
            self._resting.tick()
            if loop.time() >= next_commit:
                await self.commit()
                await self._report_lag()
                next_commit = loop.time() + interval
        await self.drain(self._config.shutdown_grace_seconds)

    async def _dispatch(self, tp: TopicPartition, records: list[Any]) -> None:
        state = self._tracker.state(_key(tp))
        if state.skip:  # finished before a restart or rebalance, per the commit metadata
            records = [r for r in records if not state.take_skipped(r.offset)]
        for record in records:
            state.started(record.offset)
        if tp.topic == self._config.topic:
            self._observer.emit(Consumed("input", len(records)))
            await self._dispatcher.dispatch(records, state)
        else:
            self._observer.emit(Consumed("delay", len(records)))
            self._resting.read(tp)
            due = self._hold_back(tp, state, records)
            if due:
                await self._redelivery.dispatch(due, state)
        limit = self._config.max_in_flight_per_partition
        full = (
            state.unfinished >= limit
            or state.waiting >= self._config.delay_lookahead_records
            or state.waiting_bytes >= DELAY_LOOKAHEAD_BYTES
        )
        if full and tp not in self._paused:
            self._consumer.pause(tp)
            self._paused.add(tp)

    def _hold_back(
        self, tp: TopicPartition, state: PartitionState, records: list[Any]
    ) -> list[Any]:
        """The delay records already due; the others wait in memory until they are, so one
        record due late never holds back those behind it (up to the lookahead)."""
        now_ms = int(time.time() * 1000)
        slack = self._level_ms(tp.topic) + DUE_SLACK_MS
        waiting = self._waiting.setdefault(tp, [])
        due: list[Any] = []
        for record in records:
            asked = due_ms_of(record.headers)
            at = now_ms if asked is None else min(asked, record.timestamp + slack, now_ms + slack)
            if at <= now_ms:
                due.append(record)
            else:
                heapq.heappush(waiting, (at, record.offset, record))
                state.waiting += 1
                state.waiting_bytes += _size(record)
        return due

    def _level(self, topic: str) -> float | None:
        """The delay a topic stands for; None for the input topic."""
        if topic not in self._levels:
            self._levels[topic] = level_of(topic, self._config.retry_topic_prefix)
        return self._levels[topic]

    def _level_ms(self, topic: str) -> int:
        level = self._level(topic)
        return 0 if level is None else int(level * 1000)

    def _position(self, tp: TopicPartition) -> int | None:
        """The next offset to read, as far as this member knows it."""
        state = self._tracker.state(_key(tp))
        return state.committed if state.next_offset is None else state.next_offset

    async def _release_due(self) -> None:
        if not self._waiting:
            return
        now_ms = int(time.time() * 1000)
        for tp, waiting in self._waiting.items():
            if not waiting or waiting[0][0] > now_ms:
                continue
            due = []
            while waiting and waiting[0][0] <= now_ms:
                due.append(heapq.heappop(waiting)[2])
            state = self._tracker.state(_key(tp))
            state.waiting -= len(due)
            state.waiting_bytes -= sum(_size(record) for record in due)
            await self._redelivery.dispatch(due, state)

    def _resume_drained(self) -> None:
        lookahead = self._config.delay_lookahead_records
        ready = []
        for tp in self._paused:
            state = self._tracker.state(_key(tp))
            if (
                state.unfinished < self._resume_below
                and state.waiting < max(1, lookahead // 2)
                and state.waiting_bytes < DELAY_LOOKAHEAD_BYTES // 2
            ):
                ready.append(tp)
        self._paused.difference_update(ready)
        if ready and not self._draining:
            self._consumer.resume(*ready)

    async def commit(self, keys: list[Key] | None = None) -> None:
        commits = self._tracker.to_commit(keys, self._config.offset_metadata_max_bytes)
        if keys is None:
            assigned = {_key(tp) for tp in self._consumer.assignment()}
            commits = {k: c for k, c in commits.items() if k in assigned}
        if not commits:
            return
        started = time.perf_counter()
        try:
            # Always an explicit map: the assignment can change under a bare commit() while
            # aiokafka rebalances in the background (aiokafka #929, #933).
            await self._consumer.commit(
                {TopicPartition(*k): (c.offset, c.metadata) for k, c in commits.items()}
            )
        except KafkaError as exc:
            # Typically a rebalance in progress: the revoke listener commits instead.
            self._observer.emit(CommitFailed(time.perf_counter() - started, repr(exc)[:300]))
            log.warning("commit.failed", error=repr(exc), partitions=len(commits))
            return
        self._observer.emit(Committed(time.perf_counter() - started, len(commits)))
        for (topic, partition), commit in commits.items():
            if commit.truncated:
                self._observer.emit(OffsetsTruncated(topic, partition))
        self._tracker.committed(commits)
        kafka_health.ok()

    async def _report_lag(self) -> None:
        """Records behind the end of each owned input partition. The end is what the last
        fetch response said (aiokafka's highwater), so a paused partition's figure is as old
        as its last fetch; a partition not fetched yet is left out."""
        if not self._owned:
            return
        assignment = self._consumer.assignment()
        lags = []
        for partition in sorted(self._owned):
            tp = TopicPartition(self._config.topic, partition)
            if tp not in assignment:
                continue
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            done = self._tracker.committed_offset(_key(tp))
            if done is None:  # nothing committed by us yet: count from where we read
                try:
                    done = await self._consumer.position(tp)  # known once fetched: no wait
                except KafkaError:
                    continue
            lags.append((partition, max(0, end - done)))
        if lags:
            self._observer.emit(InputLag(tuple(lags)))

    async def wait_finished(self, keys: list[Key] | None, within: float) -> bool:
        """Wait until the given partitions (all when None) have nothing in flight; records
        still waiting for their due time are not in flight (the next reader takes them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._tracker.in_flight(keys) > 0:
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout=min(left, 0.5))
            if keys is None:
                await self.commit()  # keep offsets moving during a long drain
        return True

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Fetching for these partitions has already stopped: finish what is in flight
        (within a bound), commit it, and let the next owner redo whatever is unfinished. Work
        still queued for them after the bound is dropped by the lanes, not sent twice."""
        keys = [_key(tp) for tp in revoked]
        if not keys:
            return
        self._flush()
        complete = await self.wait_finished(keys, self._config.revoke_grace_seconds)
        await self.commit(keys)
        for key in keys:
            self._tracker.revoke(key)
        self._paused.difference_update(revoked)
        self._resting.revoked(revoked)
        for tp in revoked:
            self._waiting.pop(tp, None)
        self._owned.difference_update(tp.partition for tp in revoked if self._is_input(tp))
        self._observer.emit(PartitionsOwned(frozenset(self._owned), assigned=False))
        log.info("partitions.revoked", partitions=sorted(keys), complete=complete)

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._tracker.assign(_key(tp))
        self._owned.update(tp.partition for tp in assigned if self._is_input(tp))
        self._observer.emit(PartitionsOwned(frozenset(self._owned), assigned=True))
        # aiokafka may fetch for the new partitions while this runs: nothing of them is
        # handed on before what they need is known (finished offsets, the order ledger).
        if assigned:
            self._consumer.pause(*assigned)
        try:
            skipped = await self._resume(assigned)
            if self._prepare is not None:
                await self._prepare()
        finally:
            if assigned and not self._draining:
                self._consumer.resume(*assigned)
                self._resting.assigned(assigned)
        log.info(
            "partitions.assigned",
            partitions=sorted(_key(tp) for tp in assigned),
            finished_before=skipped,
        )

    async def _resume(self, assigned: set[TopicPartition]) -> int:
        """Learn which records above each commit point the last owner already finished. A
        failure here costs duplicates, never a loss: the records are simply done again."""
        if self._load_committed is None or not assigned:
            return 0
        try:
            committed = await self._load_committed(sorted(assigned))
        except Exception as exc:  # any failure: redo rather than stop
            log.warning("offsets.metadata_unreadable", error=repr(exc)[:300])
            return 0
        skipped = 0
        for tp, (offset, metadata) in committed.items():
            if offset >= 0 and tp in assigned:
                state = self._tracker.state(_key(tp))
                state.resume_from(offset, metadata)
                skipped += len(state.skip)
        return skipped

    def _is_input(self, tp: TopicPartition) -> bool:
        return bool(tp.topic == self._config.topic)

    def _flush(self) -> None:
        self._dispatcher.flush()
        self._redelivery.flush()

    async def drain(self, grace: float) -> None:
        self._draining = True
        self._observer.emit(Lifecycle(Stage.DRAINING))
        assignment = list(self._consumer.assignment())
        if assignment:
            self._consumer.pause(*assignment)
        self._flush()
        complete = await self.wait_finished(None, grace)
        await self.commit()
        log.info("drained", complete=complete, unfinished=self._tracker.in_flight())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's hook, handing both events to the listener."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._listener.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._listener.assigned(assigned)
