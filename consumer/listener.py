"""The Kafka side: fetch, hand records to the dispatcher, pause when full, commit what is done.

Delivery logic never appears here, and nothing outside this module touches the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .config import KafkaConfig
from .delaypath import due_ms_of
from .delivery import Source
from .dispatcher import RecordLike
from .kafka_health import kafka_health
from .offsets import OffsetTracker, PartitionState

log = structlog.get_logger(__name__)

Key = tuple[str, int]
WAKE_SLACK_SECONDS = 0.25


class Handler(Protocol):
    """Turns a topic's records into work; `on_finished` fires per record when it is done."""

    async def dispatch(
        self, records: Sequence[RecordLike], on_finished: Callable[[Source], None]
    ) -> None: ...

    def flush(self) -> None: ...


def _key(tp: TopicPartition) -> Key:
    return (tp.topic, tp.partition)


class Listener:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        handlers: Mapping[str, Handler],
        delay_topics: set[str],
        config: KafkaConfig,
    ) -> None:
        self._consumer = consumer
        self._handlers = handlers
        self._delay_topics = delay_topics
        self._config = config
        self._tracker = OffsetTracker()
        self._paused: set[TopicPartition] = set()  # too much of it in flight
        self._sleeping: dict[TopicPartition, asyncio.TimerHandle] = {}  # head not yet due
        self._draining = False
        self._progress = asyncio.Event()  # set whenever some record finished
        self._resume_below = max(1, config.max_in_flight_per_partition // 2)

    @property
    def tracker(self) -> OffsetTracker:
        return self._tracker

    def subscribe(self) -> None:
        self._consumer.subscribe(list(self._handlers), listener=_Rebalance(self))

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
            self._resume_drained()
            if loop.time() >= next_commit:
                await self.commit()
                next_commit = loop.time() + interval
        await self.drain(self._config.shutdown_grace_seconds)

    async def _dispatch(self, tp: TopicPartition, records: list[Any]) -> None:
        if tp.topic in self._delay_topics:
            records = self._due_only(tp, records)
        if not records:
            return
        state = self._tracker.state(_key(tp))
        for record in records:
            state.started(record.offset)
        await self._handlers[tp.topic].dispatch(records, self._finisher(state))
        if state.unfinished >= self._config.max_in_flight_per_partition and tp not in self._paused:
            self._consumer.pause(tp)
            self._paused.add(tp)

    def _due_only(self, tp: TopicPartition, records: list[Any]) -> list[Any]:
        """The records already due; at the first that is not, rewind to it and let the
        partition sleep until it is due (no polling, and other partitions keep flowing)."""
        now_ms = time.time() * 1000
        for i, record in enumerate(records):
            due_ms = due_ms_of(record.headers)
            if due_ms is not None and due_ms > now_ms:
                self._consumer.seek(tp, record.offset)
                self._consumer.pause(tp)
                # Oversleep a little: records behind the head fall due moments later, and one
                # wake should take a chunk of them rather than re-fetch a batch per record.
                wake = asyncio.get_running_loop().call_later(
                    (due_ms - now_ms) / 1000 + WAKE_SLACK_SECONDS, self._wake, tp
                )
                self._sleeping[tp] = wake
                return records[:i]
        return records

    def _wake(self, tp: TopicPartition) -> None:
        del self._sleeping[tp]
        if not self._draining and tp not in self._paused and tp in self._consumer.assignment():
            self._consumer.resume(tp)

    def _finisher(self, state: PartitionState) -> Callable[[Source], None]:
        progress = self._progress

        def finished(source: Source) -> None:
            state.finished(source.offset)
            progress.set()

        return finished

    def _resume_drained(self) -> None:
        ready = [
            tp for tp in self._paused if self._tracker.unfinished(_key(tp)) < self._resume_below
        ]
        self._paused.difference_update(ready)
        awake = [tp for tp in ready if tp not in self._sleeping]
        if awake:
            self._consumer.resume(*awake)

    async def commit(self, keys: list[Key] | None = None) -> None:
        offsets = self._tracker.to_commit(keys)
        if keys is None:
            assigned = {_key(tp) for tp in self._consumer.assignment()}
            offsets = {k: o for k, o in offsets.items() if k in assigned}
        if not offsets:
            return
        try:
            # Always an explicit map: the assignment can change under a bare commit() while
            # aiokafka rebalances in the background (aiokafka #929, #933).
            await self._consumer.commit({TopicPartition(*k): o for k, o in offsets.items()})
        except KafkaError as exc:
            # Typically a rebalance in progress: the revoke listener commits instead.
            log.warning("commit.failed", error=repr(exc), partitions=len(offsets))
            return
        self._tracker.committed(offsets)
        kafka_health.ok()

    async def wait_finished(self, keys: list[Key] | None, within: float) -> bool:
        """Wait until the given partitions (all when None) have nothing unfinished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within

        def remaining() -> int:
            if keys is None:
                return self._tracker.total_unfinished()
            return sum(self._tracker.unfinished(k) for k in keys)

        while remaining() > 0:
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
        (within a bound), commit it, and let the next owner redo whatever is unfinished."""
        keys = [_key(tp) for tp in revoked]
        if not keys:
            return
        self._flush()
        complete = await self.wait_finished(keys, self._config.revoke_grace_seconds)
        await self.commit(keys)
        for key in keys:
            self._tracker.revoke(key)
        self._paused.difference_update(revoked)
        for tp in revoked:
            timer = self._sleeping.pop(tp, None)
            if timer is not None:
                timer.cancel()
        log.info("partitions.revoked", partitions=sorted(keys), complete=complete)

    def assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._tracker.assign(_key(tp))
        log.info("partitions.assigned", partitions=sorted(_key(tp) for tp in assigned))

    def _flush(self) -> None:
        for handler in self._handlers.values():
            handler.flush()

    async def drain(self, grace: float) -> None:
        self._draining = True
        assignment = list(self._consumer.assignment())
        if assignment:
            self._consumer.pause(*assignment)
        self._flush()
        complete = await self.wait_finished(None, grace)
        await self.commit()
        log.info("drained", complete=complete, unfinished=self._tracker.total_unfinished())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's hook, handing both events to the listener."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._listener.revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._listener.assigned(assigned)
