"""Wires the parts together and runs them until a signal asks to stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from .attributes import open_store
from .catalog import Catalog
from .config import ServiceConfig
from .deadletter import DeadLetterWriter, KafkaDeadLetterSink, for_delivery
from .delaypath import DelayPath, KafkaDelaySink
from .delaypath import delay_topics as delay_topics_of
from .dispatcher import Dispatcher
from .kafkatools import client_options
from .lanes import ChannelLane
from .listener import Handler, Listener
from .redelivery import Redelivery
from .sender import Sender, make_session
from .topics import DEAD_LETTER_MAX_BYTES, ensure_topics

log = structlog.get_logger(__name__)


def make_producer(config: ServiceConfig) -> AIOKafkaProducer:
    # acks=all: a dead letter counts as handed off only once every in-sync replica has it.
    return AIOKafkaProducer(
        **client_options(config.kafka),
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
    on_started: Callable[[], None] | None = None,
) -> None:
    """Consume and deliver until `stop` is set (or SIGTERM/SIGINT), then drain and return.

    `on_started` is called once the consumer is connected and subscribed (a supervisor
    tells a worker that never got there from one that crashed later)."""
    stop = stop or asyncio.Event()
    catalog = Catalog.from_config(config, environ)
    delay_topics = delay_topics_of(config)
    if config.kafka.create_topics:
        await ensure_topics(config.kafka, delay_topics)
    async with AsyncExitStack() as stack:
        store = open_store(config.attributes.backend, config.attributes.url)
        stack.push_async_callback(store.close)
        session = make_session(config.allowed_networks)
        stack.push_async_callback(session.close)
        producer = make_producer(config)
        await producer.start()
        stack.push_async_callback(producer.stop)
        dead_letters = DeadLetterWriter(
            KafkaDeadLetterSink(producer, config.kafka.dead_letter_topic)
        )
        stack.push_async_callback(dead_letters.close)
        delays = DelayPath(
            KafkaDelaySink(producer),
            config.kafka.retry_topic_prefix,
            on_unwritable=lambda delivery, reason: dead_letters.submit(
                for_delivery(delivery, reason), delivery.finish
            ),
        )
        stack.push_async_callback(delays.close)
        sender = Sender(session)
        lanes = {
            name: ChannelLane(channel, sender, dead_letters, delays, config.retry)
            for name, channel in catalog.channels.items()
        }
        for lane in lanes.values():
            lane.start()
            stack.push_async_callback(lane.close)
        consumer = AIOKafkaConsumer(
            **client_options(config.kafka),
            group_id=config.kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=config.kafka.max_poll_records,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)  # leaves the group: partitions move at once
        handlers: dict[str, Handler] = {
            config.kafka.topic: Dispatcher(catalog, store, lanes, dead_letters)
        }
        redelivery = Redelivery(catalog, lanes, dead_letters)
        handlers.update(dict.fromkeys(delay_topics, redelivery))
        listener = Listener(consumer, handlers, set(delay_topics), config.kafka)
        listener.subscribe()
        _stop_on_signals(stop)
        log.info("service.started", topic=config.kafka.topic, channels=len(lanes))
        if on_started is not None:
            on_started()
        await listener.run(stop)
    log.info("service.stopped")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            return
