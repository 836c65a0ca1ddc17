"""The Kafka side: fetch, hand records to the dispatcher, pause when full, commit what is done.

Delivery logic never appears here, and nothing outside this module touches the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .config import KafkaConfig
from .delivery import Source
from .dispatcher import Dispatcher
from .offsets import OffsetTracker, PartitionState

log = structlog.get_logger(__name__)

Key = tuple[str, int]


def _key(tp: TopicPartition) -> Key:
    return (tp.topic, tp.partition)


class Listener:
    def __init__(
        self, consumer: AIOKafkaConsumer, dispatcher: Dispatcher, config: KafkaConfig
    ) -> None:
        self._consumer = consumer
        self._dispatcher = dispatcher
        self._config = config
        self._tracker = OffsetTracker()
        self._paused: set[TopicPartition] = set()
        self._progress = asyncio.Event()  # set whenever some record finished
        self._resume_below = max(1, config.max_in_flight_per_partition // 2)

    @property
    def tracker(self) -> OffsetTracker:
        return self._tracker

    def subscribe(self) -> None:
        self._consumer.subscribe([self._config.topic], listener=_Rebalance(self))

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
            for tp, records in batches.items():
                await self._dispatch(tp, records)
            self._resume_drained()
            if loop.time() >= next_commit:
                await self.commit()
                next_commit = loop.time() + interval
        await self.drain(self._config.shutdown_grace_seconds)

    async def _dispatch(self, tp: TopicPartition, records: list[Any]) -> None:
        state = self._tracker.state(_key(tp))
        for record in records:
            state.started(record.offset)
        await self._dispatcher.dispatch(records, self._finisher(state))
        if state.unfinished >= self._config.max_in_flight_per_partition and tp not in self._paused:
            self._consumer.pause(tp)
            self._paused.add(tp)

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
        if ready:
            self._consumer.resume(*ready)
            self._paused.difference_update(ready)

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

    async def drain(self, grace: float) -> None:
        assignment = list(self._consumer.assignment())
        if assignment:
            self._consumer.pause(*assignment)
        self._dispatcher.flush()
        complete = await self.wait_finished(None, grace)
        await self.commit()
        log.info("drained", complete=complete, unfinished=self._tracker.total_unfinished())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, listener: Listener) -> None:
        self._listener = listener

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Fetching for these partitions has already stopped: finish what is in flight (within
        # a bound), commit it, and let the next owner redo whatever is still unfinished.
        keys = [_key(tp) for tp in revoked]
        if not keys:
            return
        listener = self._listener
        listener._dispatcher.flush()
        complete = await listener.wait_finished(keys, listener._config.revoke_grace_seconds)
        await listener.commit(keys)
        for key in keys:
            listener.tracker.revoke(key)
        listener._paused.difference_update(revoked)
        log.info("partitions.revoked", partitions=sorted(keys), complete=complete)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            self._listener.tracker.assign(_key(tp))
        log.info("partitions.assigned", partitions=sorted(_key(tp) for tp in assigned))
