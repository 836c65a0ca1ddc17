"""Every replica reads the order topic from its beginning into its ledger, and follows it.

A reader of its own, outside the consumer group: it is assigned the topic's one partition by
hand and commits nothing, since each replica needs the whole topic. `catch_up()` is what a
partition's new owner waits for before it hands on records of that partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from .config import KafkaConfig, ServiceConfig
from .delaypath import delay_levels
from .handoff import Handoff
from .kafkatools import client_options, stop_consumer, topic_partitions
from .orderledger import KafkaLedgerSink, OrderLedger

log = structlog.get_logger(__name__)

_FETCH_TIMEOUT_MS = 500
_WARN_EVERY_SECONDS = 10.0


class LedgerFollower:
    def __init__(
        self,
        consumer: Any,
        topic: str,
        ledger: OrderLedger,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._partition = TopicPartition(topic, 0)
        self._ledger = ledger
        self._on_fatal = on_fatal  # a follower that stopped would hold ordered records back
        self._progress = asyncio.Event()  # set whenever the ledger read further
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign([self._partition])
        await self._consumer.seek_to_beginning(self._partition)
        self._task = asyncio.create_task(self._follow(), name="order-ledger")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("order.ledger_stopped", error=repr(error)[:300])
        if self._on_fatal is not None and error is not None:
            self._on_fatal(error)  # a bug: stop, rather than hold ordered records back for ever

    async def _follow(self) -> None:
        failing = False
        while True:
            try:
                batches = await self._consumer.getmany(
                    self._partition, timeout_ms=_FETCH_TIMEOUT_MS
                )
                for record in batches.get(self._partition, ()):
                    self._ledger.apply(record.key, record.value, record.offset)
                # Past a compacted stretch or at the end, the position says more than records.
                self._ledger.read_to(await self._consumer.position(self._partition))
            except KafkaError as exc:  # the broker is away: keep trying, as the clients do
                if not failing:
                    log.warning("order.ledger_unreadable", error=repr(exc)[:300])
                failing = True
                await asyncio.sleep(1.0)
                continue
            failing = False
            self._progress.set()

    async def catch_up(self) -> None:
        """Until the ledger has read everything written before this call: no fact durable
        now is missing from the view afterwards. Waits as long as that takes (a broker
        that does not answer stalls the assignment, rather than risk the order), saying so
        every 10 s."""
        end = await self._end()
        loop = asyncio.get_running_loop()
        started = loop.time()
        warned = started
        while not self._ledger.caught_up(end):
            if self._task is not None and self._task.done():
                self._task.result()  # the follower died: say why instead of waiting for ever
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), _WARN_EVERY_SECONDS)
            if loop.time() - warned >= _WARN_EVERY_SECONDS:
                warned = loop.time()
                log.warning(
                    "order.ledger_behind",
                    waited=round(warned - started),
                    end=end,
                    topic=str(self._partition.topic),
                )

    async def _end(self) -> int:
        while True:
            try:
                ends = await self._consumer.end_offsets([self._partition])
            except KafkaError as exc:
                log.warning("order.ledger_unreadable", error=repr(exc)[:300])
                await asyncio.sleep(1.0)
                continue
            return int(ends[self._partition])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()  # one that died has said why already
            await asyncio.gather(self._task, return_exceptions=True)
        await stop_consumer(self._consumer)


async def open_ledger(
    config: ServiceConfig,
    producer: Any,
    handoff: Handoff,
    environ: Mapping[str, str] | None = None,
    *,
    ordered: bool,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> tuple[OrderLedger, LedgerFollower] | None:
    """The order ledger, followed from the start of its topic; None when no channel keeps
    order and the topic does not exist. Once it exists (a channel kept order before), it is
    read anyway: deliveries that still carry order facts erase them as they end."""
    kafka = config.kafka
    try:
        await topic_partitions(kafka.order_topic, **client_options(kafka, environ))
    except LookupError:
        if not ordered:
            return None
        raise RuntimeError(
            f"the order topic {kafka.order_topic!r} does not exist: create it (one partition, "
            "cleanup.policy compact) or let the service create it (kafka.create_topics)"
        ) from None
    # Beyond any delivery's age: only a fact nobody will ever erase gets that old.
    stale_after = config.retry.max_age + max(delay_levels(config.retry)) + 86_400
    ledger = OrderLedger(KafkaLedgerSink(producer, kafka.order_topic), handoff, stale_after)
    follower = make_follower(kafka, ledger, environ, on_fatal)
    await follower.start()
    return ledger, follower


def make_follower(
    config: KafkaConfig,
    ledger: OrderLedger,
    environ: Mapping[str, str] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> LedgerFollower:
    consumer = AIOKafkaConsumer(
        **client_options(config, environ),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    return LedgerFollower(consumer, config.order_topic, ledger, on_fatal)
