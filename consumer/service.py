"""Wires the parts together and runs them until a signal asks to stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from .admin import AdminServer
from .attributes.backends import SentAttributes, cache_for, open_backend
from .attributes.follower import AttributeFollower, open_follower
from .breaker import State
from .catalog import Catalog, Channel
from .channels.topic import open_channel_state
from .config import ServiceConfig
from .deadletter import DeadLetterWriter, KafkaDeadLetterSink, for_delivery
from .delaypath import DelayPath, KafkaDelaySink, delay_levels
from .delaypath import delay_topics as delay_topics_of
from .delivery import Delivery
from .dispatcher import Dispatcher
from .handoff import Handoff
from .health import LoopMonitor
from .hooks.logs import RetrySummary, TransitionLog
from .hooks.prometheus import PrometheusHook
from .hooks.readiness import Readiness
from .hooks.status import StatusBoard
from .kafkaprobe import wait_until_reachable
from .kafkatools import client_options
from .lanes import ChannelLane
from .limit_backends import open_limits
from .listener import Listener
from .observer import CircuitChanged, GaveUp, Lifecycle, Observer, Stage
from .orderfollow import LedgerFollower, open_ledger
from .ordering import UserOrder
from .orderledger import OrderLedger
from .outcome import Outcome
from .redelivery import Redelivery
from .redis_health import RedisHealth
from .reload import Reloader
from .sender import Sender
from .sequencer import Sequencer, Unordered, end, place_of
from .status_page import ServiceInfo, render
from .supervisor import worker_identity
from .topics import DEAD_LETTER_MAX_BYTES, ensure_topics
from .transport.backends import open_transport
from .version import __version__

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
    config_path: str | Path | None = None,
    *,
    admin_port: int | None = None,
    admin_bound: Callable[[int], None] | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Consume and deliver until `stop` is set (or SIGTERM/SIGINT), then drain and return.

    With `config_path`, SIGHUP (and `reload.watch`) reload channels and campaigns from it.
    `admin_port` overrides `admin.port` (a supervisor of several workers gives each its own);
    `admin_bound` is told the port the admin server listens on, before anything else starts.
    `on_started` is called once the consumer is connected and subscribed (a supervisor
    tells a worker that never got there from one that crashed later).
    """
    stop = stop or asyncio.Event()
    catalog = Catalog.from_config(config, environ)
    levels = delay_levels(config.retry)
    fatal: list[BaseException] = []

    def stop_on_bug(exc: BaseException) -> None:
        # A bug in a hand-off must not loop forever: stop, drain what can be, and exit 1.
        log.error("internal_error", error=repr(exc)[:500], exc_info=exc)
        fatal.append(exc)
        stop.set()

    # At once: a stop asked for during start-up (a pod deleted while it starts) is a clean
    # drain of nothing, not a kill by the default handler.
    _on_signal(signal.SIGTERM, stop.set)
    _on_signal(signal.SIGINT, stop.set)
    summary = RetrySummary()
    observer = Observer([TransitionLog(debug=config.logging.level == "debug"), summary])
    lanes: dict[str, ChannelLane] = {}
    async with AsyncExitStack() as stack:
        if config.tracing.otlp_endpoint is not None:
            from .hooks.tracing import TracingHook

            tracing = TracingHook(config.tracing.otlp_endpoint, config.tracing.service_name)
            observer.add(tracing, spans=True)
            stack.push_async_callback(tracing.close)  # last out: the drain's spans go too
        # First in, last out: /metrics and the status page answer through the whole drain.
        admin: AdminServer | None = None
        metrics: PrometheusHook | None = None
        if config.admin.enabled:
            admin, metrics = await _start_admin(config, catalog, observer, admin_port, stack)
            if admin_bound is not None:
                admin_bound(admin.port)
        observer.emit(Lifecycle(Stage.CONFIG_LOADED))
        # A wrong password or CA: one clear error at once; a cluster not up yet is waited for.
        if not await wait_until_reachable(
            config.kafka,
            environ,
            stop=stop,
            on_waiting=lambda why: observer.emit(Lifecycle(Stage.WAITING_FOR_KAFKA)),
        ):
            log.info("service.stopped", before="kafka answered")
            summary.close()
            return
        attributes_topic = config.attributes.topic
        ordered = any(channel.per_user for channel in catalog.channels.values())
        if config.kafka.create_topics:
            compacted = [] if attributes_topic is None else [attributes_topic]
            await ensure_topics(
                config.kafka, delay_topics_of(config), environ, compacted, ordered=ordered
            )
        redis_health = RedisHealth(observer)  # one gauge for every user of Redis
        sent_attributes = SentAttributes(catalog)  # a lookup fetches only these
        backend = open_backend(
            config.attributes, environ, redis_health, fields=sent_attributes, observer=observer
        )
        cache = cache_for(backend, config.attributes)
        store = cache or backend
        stack.push_async_callback(store.close)
        forget = None if cache is None else cache.forget
        follower = open_follower(config, backend, forget, observer, environ)
        if follower is not None:
            _start_follower(follower, stop_on_bug)
            stack.push_async_callback(follower.stop)  # before the store closes
        transport = open_transport(config.http, config.allowed_networks)
        stack.push_async_callback(transport.close)
        producer = make_producer(config, environ)
        await producer.start()
        stack.push_async_callback(producer.stop)
        observer.emit(Lifecycle(Stage.PRODUCER_STARTED))

        def reset_circuit(name: str) -> None:  # `channels reset-circuit`, from any host
            lane = lanes.get(name)
            if lane is not None:
                lane.reset_circuit()
                log.info("circuit.reset", channel=name)

        channel_state = await open_channel_state(
            config, producer, observer, stack, reset_circuit, environ
        )
        dead_letters = DeadLetterWriter(
            KafkaDeadLetterSink(producer, config.kafka.dead_letter_topic),
            Handoff("dead letter", observer, on_fatal=stop_on_bug),
        )
        stack.push_async_callback(dead_letters.close)

        def unwritable(delivery: Delivery, reason: Outcome) -> None:
            observer.emit(GaveUp(delivery.channel.name, delivery, reason, None))

            def ended() -> None:  # a dead letter ends it: its order fact, if any, goes too
                if ledger is None:
                    delivery.finish()
                else:
                    end(ledger, delivery.channel.name, delivery, place_of(delivery))

            dead_letters.submit(for_delivery(delivery, reason), ended)

        # Order facts are part of the delay hand-off: written on the same path, counted alike.
        delay_handoff = Handoff("delay", observer, on_fatal=stop_on_bug)
        delays = DelayPath(
            KafkaDelaySink(producer),
            config.kafka.retry_topic_prefix,
            levels,
            config.kafka.group_id,
            delay_handoff,
            on_unwritable=unwritable,
        )
        stack.push_async_callback(delays.close)
        ledger: OrderLedger | None = None
        ledger_follower: LedgerFollower | None = None
        opened = await open_ledger(
            config, producer, delay_handoff, environ, ordered=ordered, on_fatal=stop_on_bug
        )
        if opened is not None:
            ledger, ledger_follower = opened
            stack.push_async_callback(ledger_follower.close)
        if metrics is not None:
            metrics.track_pending("delay", lambda: delays.pending)
            metrics.track_pending("dead_letter", lambda: dead_letters.pending)
        sender = Sender(transport)
        limits = open_limits(config, environ, redis_health, observer)
        stack.push_async_callback(limits.close)

        def make_lane(channel: Channel) -> ChannelLane:
            parts = limits.for_channel(channel, _circuit_log(channel.name, observer))
            sequencer: Sequencer | None = None
            if ledger is None:
                if channel.per_user:  # added by a reload: the order topic is read at start
                    log.warning(
                        "config.restart_needed", sections=[f"channels.{channel.name}.ordering"]
                    )
            elif channel.per_user:
                sequencer = UserOrder(
                    channel.name,
                    ledger,
                    delays,
                    max_held=config.kafka.max_in_flight_per_partition // 10,
                    backlog_seconds=config.retry.max_backlog_seconds,
                    observer=observer,
                )
            else:
                sequencer = Unordered(delays, ledger, channel.name)
            return ChannelLane(
                channel,
                sender,
                dead_letters,
                delays,
                config.retry,
                observer=observer,
                limiter=parts.limiter,
                gate=parts.gate,
                breaker=parts.breaker,
                control=channel_state,
                sequencer=sequencer,
            )

        lanes.update({name: make_lane(channel) for name, channel in catalog.channels.items()})
        for lane in lanes.values():
            lane.start()

        async def close_lanes() -> None:  # those of the config in force at the end
            await asyncio.gather(*(lane.close() for lane in lanes.values()))

        stack.push_async_callback(close_lanes)
        kafka_admin = AIOKafkaAdminClient(**client_options(config.kafka, environ))
        await kafka_admin.start()
        stack.push_async_callback(kafka_admin.close)

        async def committed(tps: list[TopicPartition]) -> dict[TopicPartition, tuple[int, str]]:
            group = config.kafka.group_id
            found = await kafka_admin.list_consumer_group_offsets(group, partitions=tps)
            return {tp: (meta.offset, meta.metadata) for tp, meta in found.items()}

        consumer = make_consumer(config, environ)
        await consumer.start()
        # Leaves the group, so partitions move at once (a static member keeps them until its
        # session times out, for a quick restart under the same id).
        stack.push_async_callback(consumer.stop)
        dispatcher = Dispatcher(catalog, store, lanes, dead_letters, observer)
        redelivery = Redelivery(
            catalog,
            lanes,
            dead_letters,
            delays,
            config.kafka.group_id,
            config.retry.max_age,
            observer,
            ledger,
        )
        listener = Listener(
            consumer,
            dispatcher,
            redelivery,
            config.kafka,
            load_committed=committed,
            observer=observer,
            prepare=(None if ledger_follower is None else _caught_up(ledger_follower, stop_on_bug)),
            levels=levels,
        )
        if config_path is not None:
            reloader = Reloader(
                config_path,
                config,
                catalog,
                lanes,
                make_lane,
                [dispatcher, redelivery, sent_attributes],
                environ,
                observer,
                limits.pacing,
            )
            stack.push_async_callback(reloader.close)
            _on_signal(signal.SIGHUP, reloader.request)
            if config.reload.watch:
                watcher = asyncio.create_task(reloader.watch(config.reload.interval_seconds))
                stack.callback(watcher.cancel)
        # A replica delivers nothing until its attribute store holds the topic as it was at
        # start: it joins the group (and takes partitions) only then.
        if follower is None or await follower.caught_up(stop):
            listener.subscribe()
        log.info(
            "service.started",
            topic=config.kafka.topic,
            channels=len(lanes),
            admin_port=None if admin is None else admin.port,
        )
        if on_started is not None:
            on_started()
        await listener.run(stop)
        observer.emit(Lifecycle(Stage.STOPPED))
    summary.close()
    if fatal:
        raise RuntimeError(f"stopped after an internal error: {fatal[0]!r}")
    log.info("service.stopped")


async def _start_admin(
    config: ServiceConfig,
    catalog: Catalog,
    observer: Observer,
    port: int | None,
    stack: AsyncExitStack,
) -> tuple[AdminServer, PrometheusHook]:
    """The hooks the admin port reads, subscribed, and the server listening."""
    names = list(catalog.channels)
    topic = config.attributes.topic
    metrics = PrometheusHook(names, follows_attributes=topic is not None)
    board = StatusBoard(names, attributes_topic=topic)
    readiness = Readiness(follows_attributes=topic is not None)
    for hook in (metrics, board, readiness):
        observer.add(hook)
    monitor = LoopMonitor()
    monitor.start()
    stack.push_async_callback(monitor.stop)
    info = ServiceInfo(__version__, config.kafka.group_id, config.kafka.topic)
    admin = AdminServer(
        config.admin.host,
        config.admin.port if port is None else port,
        metrics=metrics,
        health=monitor.verdict,
        readiness=readiness.verdict,
        status_page=lambda: render(board.snapshot(), info, readiness.verdict()),
    )
    await admin.start()
    stack.push_async_callback(admin.stop)
    return admin, metrics


INSTANCE_ID_ENV = "WEBHOOK_CONSUMER_INSTANCE_ID"


def _start_follower(follower: AttributeFollower, on_bug: Callable[[BaseException], None]) -> None:
    """Run the follower; its end, unless asked for, is a bug that stops the service."""
    follower.start()

    def ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            on_bug(task.exception() or RuntimeError("the attributes follower ended"))

    assert follower.task is not None
    follower.task.add_done_callback(ended)


def _caught_up(
    follower: LedgerFollower, on_bug: Callable[[BaseException], None]
) -> Callable[[], Awaitable[None]]:
    """Before a new partition's records go anywhere, the order ledger has read to its end."""

    async def prepare() -> None:
        try:
            await follower.catch_up()
        except Exception as exc:  # the follower died: not safe to go on keeping any order
            on_bug(exc)
            raise

    return prepare


def _circuit_log(channel: str, observer: Observer) -> Callable[[State, int, float], None]:
    def changed(state: State, failures: int, cooldown: float) -> None:
        observer.emit(CircuitChanged(channel, state.value, failures, cooldown))

    return changed


def make_consumer(
    config: ServiceConfig, environ: Mapping[str, str] | None = None
) -> AIOKafkaConsumer:
    kafka = config.kafka
    env = os.environ if environ is None else environ
    instance = kafka.group_instance_id or env.get(INSTANCE_ID_ENV) or None
    worker = worker_identity(env)
    if instance is not None and worker is not None:  # each worker is a member of its own
        instance = f"{instance}-{worker.index}"
    return AIOKafkaConsumer(
        **client_options(kafka, environ),
        group_id=kafka.group_id,
        group_instance_id=instance,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=kafka.max_poll_records,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        rebalance_timeout_ms=kafka.effective_rebalance_timeout_ms,
        # The delay topics are matched by pattern on each metadata refresh: one created by
        # another replica (a new schedule level) is read within a minute.
        metadata_max_age_ms=60_000,
    )


def _on_signal(sig: signal.Signals, handler: Callable[[], None]) -> None:
    # Not in the main thread (tests run the service that way): the caller's stop event only.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(sig, handler)
