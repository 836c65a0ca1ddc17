"""Wires the parts together and runs them until a signal asks to stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from .attributes import open_store
from .breaker import State
from .catalog import Catalog
from .config import ServiceConfig
from .deadletter import DeadLetterWriter, KafkaDeadLetterSink, for_delivery
from .delaypath import DelayPath, KafkaDelaySink, delay_levels
from .delaypath import delay_topics as delay_topics_of
from .delivery import Delivery
from .dispatcher import Dispatcher
from .handoff import Handoff
from .hooks.logs import RetrySummary, TransitionLog
from .kafkaprobe import probe
from .kafkatools import client_options
from .lanes import ChannelLane
from .limits import open_limits
from .listener import Listener
from .observer import CircuitChanged, GaveUp, Observer
from .outcome import Outcome
from .redelivery import Redelivery
from .sender import Sender, make_session
from .topics import DEAD_LETTER_MAX_BYTES, ensure_topics

log = structlog.get_logger(__name__)


def make_producer(
    config: ServiceConfig, environ: Mapping[str, str] | None = None
) -> AIOKafkaProducer:
    # acks=all: a dead letter counts as handed off only once every in-sync replica has it.
    return AIOKafkaProducer(
        **client_options(config.kafka, environ),
        acks="all",
        linger_ms=5,
        # Hand-offs come in bursts when a receiver fails; big batches keep them cheap.
        max_batch_size=512 * 1024,
        max_request_size=DEAD_LETTER_MAX_BYTES,
    )


async def run_service(
    config: ServiceConfig,
    stop: asyncio.Event | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Consume and deliver until `stop` is set (or SIGTERM/SIGINT), then drain and return."""
    stop = stop or asyncio.Event()
    catalog = Catalog.from_config(config, environ)
    levels = delay_levels(config.retry)
    await probe(config.kafka, environ)  # a wrong password or CA: one clear error, not retries
    if config.kafka.create_topics:
        await ensure_topics(config.kafka, delay_topics_of(config), environ)
    fatal: list[BaseException] = []

    def stop_on_bug(exc: BaseException) -> None:
        # A bug in a hand-off must not loop forever: stop, drain what can be, and exit 1.
        log.error("internal_error", error=repr(exc)[:500], exc_info=exc)
        fatal.append(exc)
        stop.set()

    summary = RetrySummary()
    observer = Observer([TransitionLog(debug=config.logging.level == "debug"), summary])
    async with AsyncExitStack() as stack:
        store = open_store(config.attributes, environ)
        stack.push_async_callback(store.close)
        session = make_session(config.allowed_networks)
        stack.push_async_callback(session.close)
        producer = make_producer(config, environ)
        await producer.start()
        stack.push_async_callback(producer.stop)
        dead_letters = DeadLetterWriter(
            KafkaDeadLetterSink(producer, config.kafka.dead_letter_topic),
            Handoff("dead letter", observer, on_fatal=stop_on_bug),
        )
        stack.push_async_callback(dead_letters.close)

        def unwritable(delivery: Delivery, reason: Outcome) -> None:
            observer.emit(GaveUp(delivery.channel.name, delivery, reason, None))
            dead_letters.submit(for_delivery(delivery, reason), delivery.finish)

        delays = DelayPath(
            KafkaDelaySink(producer),
            config.kafka.retry_topic_prefix,
            levels,
            config.kafka.group_id,
            Handoff("delay", observer, on_fatal=stop_on_bug),
            on_unwritable=unwritable,
        )
        stack.push_async_callback(delays.close)
        sender = Sender(session)
        limits = open_limits(config, environ)
        stack.push_async_callback(limits.close)
        lanes = {}
        for name, channel in catalog.channels.items():
            parts = limits.for_channel(channel, _circuit_log(name, observer))
            lanes[name] = ChannelLane(
                channel,
                sender,
                dead_letters,
                delays,
                config.retry,
                observer=observer,
                limiter=parts.limiter,
                gate=parts.gate,
                breaker=parts.breaker,
            )
        for lane in lanes.values():
            lane.start()
            stack.push_async_callback(lane.close)
        consumer = make_consumer(config, environ)
        await consumer.start()
        stack.push_async_callback(consumer.stop)  # leaves the group: partitions move at once
        listener = Listener(
            consumer,
            Dispatcher(catalog, store, lanes, dead_letters, observer),
            Redelivery(
                catalog,
                lanes,
                dead_letters,
                delays,
                config.kafka.group_id,
                config.retry.max_age,
                observer,
            ),
            config.kafka,
        )
        listener.subscribe()
        _stop_on_signals(stop)
        log.info("service.started", topic=config.kafka.topic, channels=len(lanes))
        await listener.run(stop)
    summary.close()
    if fatal:
        raise RuntimeError(f"stopped after an internal error: {fatal[0]!r}")
    log.info("service.stopped")


def _circuit_log(channel: str, observer: Observer) -> Callable[[State, int, float], None]:
    def changed(state: State, failures: int, cooldown: float) -> None:
        observer.emit(CircuitChanged(channel, state.value, failures, cooldown))

    return changed


def make_consumer(
    config: ServiceConfig, environ: Mapping[str, str] | None = None
) -> AIOKafkaConsumer:
    kafka = config.kafka
    return AIOKafkaConsumer(
        **client_options(kafka, environ),
        group_id=kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=kafka.max_poll_records,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        rebalance_timeout_ms=kafka.effective_rebalance_timeout_ms,
    )


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            return
