"""The admin port of a running service, on a real Kafka broker and a real receiver: /metrics
moves with the work and holds only catalogued, bounded labels; /readyz follows the group."""

from __future__ import annotations

import asyncio

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from consumer import __version__
from consumer.kafkatools import stop_consumer
from consumer.receiver import Receiver
from tests import catalogue
from tests.catalogue import Bounds, value
from tests.support.polling import until

from .admin_port import get, poll_status
from .support import (
    Setup,
    StartService,
    channel,
    committed_to_end,
    create_topic,
    delay_topics_named,
    encoded,
    event,
    pairs_delivered,
    produce,
    record_count,
    wait_record_count,
)

PARTITIONS = 3


async def test_metrics_move_with_the_work_and_stay_in_the_catalogue(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    http: aiohttp.ClientSession,
    running_service: StartService,
) -> None:
    receiver.answer("flaky", default=503)
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "steady"), channel(receiver, "flaky")],
        {"c": ["steady", "flaky"]},
        # One quick retry, one 1 s delay, then a dead letter; the circuit stays closed so
        # every delivery takes that same path.
        retry={
            "quick_attempts": 2,
            "schedule_seconds": [1],
            "circuit_breaker": {"failures": 100_000},
        },
        tmp=tmp,
    )
    await create_topic(bootstrap, setup.topic, PARTITIONS)
    service = running_service(setup.config(), setup.environ)
    admin = await service.admin_url()
    await poll_status(http, f"{admin}/readyz", 200)
    _, before = await get(http, f"{admin}/metrics")
    assert (
        value(before, "webhook_consumer_deliveries_total", channel="steady", outcome="delivered")
        == 0
    )

    events = [event("c", f"u-{i}") for i in range(40)]
    await produce(bootstrap, setup.topic, [*encoded(events), (b"k", b"not json")])
    assert await receiver.wait_for(
        lambda r: len({d for ch, d in pairs_delivered(r) if ch == "steady"}) == len(events), 60
    )
    assert await wait_record_count(bootstrap, setup.dead_letter_topic, len(events) + 1, 60), (
        "the dead letters were not all written"
    )
    assert await committed_to_end(setup)
    lag = "webhook_consumer_input_lag_records"
    status, after, lags = 0, "", []

    async def no_lag() -> bool:  # the lag is measured after each commit interval
        nonlocal status, after, lags
        status, after = await get(http, f"{admin}/metrics")
        lags = [value(after, lag, partition=str(p)) for p in range(PARTITIONS)]
        return lags == [0] * PARTITIONS

    assert await until(no_lag, 60, every=0.1), f"input lag still {lags}"
    await service.shutdown()

    assert status == 200
    n = len(events)
    assert (
        value(after, "webhook_consumer_deliveries_total", channel="steady", outcome="delivered")
        == n
    )
    assert value(after, "webhook_consumer_attempts_total", channel="steady", result="success") == n
    assert (
        value(after, "webhook_consumer_deliveries_total", channel="flaky", outcome="dead_lettered")
        == n
    )
    # Two quick attempts and one after the delay, each answered 503.
    assert (
        value(after, "webhook_consumer_attempts_total", channel="flaky", result="server_error")
        == 3 * n
    )
    assert value(after, "webhook_consumer_retries_total", channel="flaky", step="1") == n
    assert value(after, "webhook_consumer_redeliveries_total", channel="flaky") == n
    assert value(after, "webhook_consumer_dead_letters_total", reason="http_status") == n
    assert value(after, "webhook_consumer_dead_letters_total", reason="invalid_event") == 1
    assert value(after, "webhook_consumer_events_consumed_total", topic_kind="input") == n + 1
    # Each delay record read once (no restart): however the 40 deliveries were bundled.
    delay_topics = await delay_topics_named(bootstrap, f"{setup.group}.retry")
    delay_records = sum([await record_count(bootstrap, t) for t in delay_topics])
    assert 1 <= delay_records <= n
    assert (
        value(after, "webhook_consumer_events_consumed_total", topic_kind="delay") == delay_records
    )
    assert (value(after, "webhook_consumer_commit_duration_seconds_count") or 0) > 0
    assert value(after, "webhook_consumer_circuit_state", channel="flaky", state="closed") == 1
    assert value(after, "webhook_consumer_build_info", version=__version__) == 1
    assert (
        value(after, "webhook_consumer_last_success_timestamp_seconds", channel="steady") or 0
    ) > 0
    bounds = Bounds(channels={"steady", "flaky"}, partitions=range(PARTITIONS), steps=1)
    assert catalogue.problems(after, bounds) == []
    # Everything the catalogue lists is exported; redis_available only with a Redis backend,
    # the attribute follower's only with an attributes topic.
    expected = {
        name
        for name in catalogue.metrics()
        if name != "webhook_consumer_redis_available" and name not in catalogue.FOLLOWER_METRICS
    }
    assert catalogue.exported_metrics(after) == expected
    assert "process_cpu_seconds_total" in after  # the process collector


async def test_redis_available_is_exported_with_a_redis_backend(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    redis_url: str,
    http: aiohttp.ClientSession,
    running_service: StartService,
) -> None:
    setup = Setup(
        bootstrap, receiver, [channel(receiver, "a")], {"c": ["a"]}, tmp=tmp, redis_url=redis_url
    )
    await create_topic(bootstrap, setup.topic, 1)
    service = running_service(setup.config(), setup.environ)
    admin = await service.admin_url()
    _, before = await get(http, f"{admin}/metrics")
    assert value(before, "webhook_consumer_redis_available") is None  # not asked yet
    await produce(bootstrap, setup.topic, encoded([event("c", "u-1")]))
    assert await receiver.wait_for(lambda r: len(r.delivered()) == 1, 60)
    _, after = await get(http, f"{admin}/metrics")
    await service.shutdown()
    assert value(after, "webhook_consumer_redis_available") == 1


class _HeldRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """A member that, asked to give its partitions back, holds on until told: the group
    cannot finish the rebalance (and so no newcomer can join) before it does."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def on_partitions_revoked(self, revoked: object) -> None:
        if revoked:
            self.entered.set()
            await self.release.wait()

    async def on_partitions_assigned(self, assigned: object) -> None:
        pass


async def test_readyz_is_503_until_the_group_is_joined_then_200(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    http: aiohttp.ClientSession,
    running_service: StartService,
) -> None:
    setup = Setup(bootstrap, receiver, [channel(receiver, "a")], {"c": ["a"]}, tmp=tmp)
    await create_topic(bootstrap, setup.topic, PARTITIONS)
    holder = _HeldRevoke()
    member = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=setup.group)
    member.subscribe([setup.topic], listener=holder)
    await member.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not member.assignment():
        assert loop.time() < deadline, "the first member never got its partitions"
        await member.getmany(timeout_ms=100)
    service = running_service(setup.config(), setup.environ)
    try:
        admin = await service.admin_url()
        status, body = await get(http, f"{admin}/readyz")
        assert status == 503, body
        # The service asked to join: the group now waits for the first member to give back.
        await asyncio.wait_for(holder.entered.wait(), 60)
        status, body = await get(http, f"{admin}/readyz")
        assert (status, body) == (503, "unavailable: waiting for joining the consumer group\n")
        status, _ = await get(http, f"{admin}/healthz")
        assert status == 200  # alive all along: not joined yet is no reason to restart
        holder.release.set()
        assert await poll_status(http, f"{admin}/readyz", 200) == "ok: ready\n"
    finally:
        holder.release.set()
        await stop_consumer(member)
        await service.shutdown()
