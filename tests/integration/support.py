"""Helpers for integration tests: configs on fresh topics, producing, reading offsets."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumer.config import ServiceConfig, parse_config
from consumer.delaypath import DelayedDelivery, delay_topic, level_of, parse_delayed_records
from consumer.kafkatools import stop_consumer, topic_partitions
from consumer.receiver import Receiver
from consumer.service import run_service
from tests.support.polling import until
from tests.support.processes import run_cli as run_cli  # where these tests have found it


def event(campaign: str, user: str, event_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": "user.threshold.reached",
        "schema_version": 1,
        "user_id": user,
        "campaign_id": campaign,
        "behavior": {"name": "add_to_cart", "count": 5, "threshold": 5},
        "occurred_at": datetime.now(UTC).isoformat(),
        **extra,
    }


def channel(receiver: Receiver, name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": receiver.url(name),
        "secret_env": f"SECRET_{name.upper().replace('-', '_')}",
        "template_params": {"title": "string"},
        "user_attributes": ["hobby"],
        "timeout_seconds": 5,
        **overrides,
    }


@dataclass
class Setup:
    """One test's topics, group, secrets and config."""

    bootstrap: str
    receiver: Receiver
    channels: list[dict[str, Any]]
    campaigns: dict[str, list[str]]
    kafka: dict[str, Any] = field(default_factory=dict)
    retry: dict[str, Any] = field(default_factory=dict)
    log_level: str = "warning"
    env: dict[str, str] = field(default_factory=dict)  # more variables, e.g. a Kafka password
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    tmp: str = "/tmp"
    redis_url: str | None = None  # attributes in Redis (under a prefix of this test's own)
    # Any free port on loopback: tests run side by side, and 9108 may be someone else's.
    admin: dict[str, Any] = field(default_factory=lambda: {"host": "127.0.0.1", "port": 0})
    rate_limiter: dict[str, Any] = field(default_factory=dict)  # the config section, if any
    http: dict[str, Any] = field(default_factory=dict)  # the config section, if any

    @property
    def attributes(self) -> dict[str, Any]:
        if self.redis_url is None:
            return {"backend": "sqlite", "url": f"sqlite:///{self.tmp}/attrs.db"}
        return {"backend": "redis", "url": self.redis_url, "key_prefix": f"test-{self.suffix}:"}

    @property
    def topic(self) -> str:
        return f"events-{self.suffix}"

    @property
    def group(self) -> str:
        return f"group-{self.suffix}"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.group}.dlq"  # the default, derived from the group

    def delay_topic(self, seconds: float) -> str:
        return delay_topic(f"{self.group}.retry", seconds)

    @property
    def environ(self) -> dict[str, str]:
        secrets = {ch["secret_env"]: f"key-{ch['name']}-{self.suffix}" for ch in self.channels}
        return {**secrets, **self.env}

    def secrets_by_channel(self) -> dict[str, str]:
        return {ch["name"]: self.environ[ch["secret_env"]] for ch in self.channels}

    def document(self) -> dict[str, Any]:
        return {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "group_id": self.group,
                "topic": self.topic,
                "topic_partitions": 3,
                "commit_interval_ms": 200,
                "shutdown_grace_seconds": 20,
                **self.kafka,
            },
            "attributes": self.attributes,
            **({"rate_limiter": self.rate_limiter} if self.rate_limiter else {}),
            **({"http": self.http} if self.http else {}),
            "allowed_networks": ["127.0.0.0/8"],
            "retry": {
                "quick_attempts": 3,
                "backoff_initial_ms": 20,
                "backoff_max_ms": 200,
                **self.retry,
            },
            "logging": {"level": self.log_level, "format": "json"},
            "admin": self.admin,
            "channels": self.channels,
            "campaigns": [
                {"id": cid, "channels": names, "template_params": {"title": f"hello {cid}"}}
                for cid, names in self.campaigns.items()
            ],
        }

    def config(self) -> ServiceConfig:
        self.receiver.secrets.update(self.secrets_by_channel())
        return parse_config(self.document(), "test-config", self.environ)


def write_config(setup: Setup, folder: Path) -> Path:
    """Validate the config, which tells the receiver the secrets, and write it for a process."""
    setup.config()
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(setup.document(), allow_unicode=True), encoding="utf-8")
    return path


class RunningService:
    """The service in this process, stoppable like SIGTERM would (the stop event). Start it
    through the `running_service` fixture, which stops it whatever the test's outcome."""

    def __init__(self, config: ServiceConfig, environ: dict[str, str]) -> None:
        self.stop = asyncio.Event()
        self.admin_port: int | None = None
        self.task = asyncio.create_task(
            run_service(config, self.stop, environ, admin_bound=self._admin_bound)
        )

    def _admin_bound(self, port: int) -> None:
        self.admin_port = port

    async def admin_url(self, within: float = 30) -> str:
        """http://127.0.0.1:<port> of the admin server, once it listens."""

        def bound() -> bool:
            if self.task.done():
                self.task.result()  # raises what stopped the service
                raise AssertionError("the service stopped before its admin server listened")
            return self.admin_port is not None

        assert await until(bound, within, every=0.02), "the admin server did not start"
        return f"http://127.0.0.1:{self.admin_port}"

    async def shutdown(self, within: float = 60) -> None:
        """Stop as on SIGTERM and wait for the drain; raises what the service raised."""
        self.stop.set()
        await asyncio.wait_for(asyncio.shield(self.task), within)

    async def close(self) -> None:
        """The fixture's stop: shut down if still running, cancelled if it will not stop."""
        if self.task.done():
            return
        try:
            await self.shutdown()
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            raise


# The `running_service` fixture: running_service(config, environ) -> RunningService.
StartService = Callable[[ServiceConfig, dict[str, str]], RunningService]


async def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def encoded(events: Iterable[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(e["user_id"].encode(), orjson.dumps(e)) for e in events]


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    tps = await topic_partitions(topic, bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await stop_consumer(consumer)


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    finally:
        await admin.close()


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, number of members) of a consumer group, from the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _error, _group_id, state, _protocol_type, _protocol, members, *_ = response.groups[0]
    return state, len(members)


async def read_all(bootstrap: str, topic: str, within: float = 20) -> list[Any]:
    """Every record now in `topic`, read up to its current end offsets."""
    ends = await end_offsets(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + within
        while [tp for tp in tps if await consumer.position(tp) < ends[tp.partition]]:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            batch = await consumer.getmany(timeout_ms=200)
            for items in batch.values():
                records.extend(items)
    finally:
        await stop_consumer(consumer)
    return records


def pairs_delivered(receiver: Receiver) -> set[tuple[str, str]]:
    """(channel, delivery id) of every verified 2xx answer."""
    return {(r.channel, r.delivery_id) for r in receiver.delivered()}


async def committed_to_end(setup: Setup, within: float = 30) -> bool:
    """Poll until the group's committed offsets reach the topic's end offsets."""
    return await group_committed_to_end(setup.bootstrap, setup.group, [setup.topic], within)


async def record_count(bootstrap: str, topic: str) -> int:
    """Records ever written to `topic`; 0 while the service has not created it yet."""
    try:
        return sum((await end_offsets(bootstrap, topic)).values())
    except LookupError:
        return 0


def carried(records: Iterable[Any]) -> list[DelayedDelivery]:
    """The deliveries delay records carry, a bundle's one by one."""
    deliveries = []
    for record in records:
        found = parse_delayed_records(record.value)
        assert not isinstance(found, str), found
        deliveries.extend(found)
    return deliveries


async def delayed_deliveries(bootstrap: str, prefix: str) -> list[DelayedDelivery]:
    """Every delivery written to a delay topic under `prefix`."""
    records = []
    for topic in await delay_topics_named(bootstrap, prefix):
        records.extend(await read_all(bootstrap, topic, within=60))
    return carried(records)


async def delay_topics_named(bootstrap: str, prefix: str) -> list[str]:
    """The delay topics that exist under `prefix` (`<prefix>.<level>`), whoever created them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = await admin.list_topics()
    finally:
        await admin.close()
    return sorted(t for t in topics if level_of(t, prefix) is not None)


async def wait_record_count(bootstrap: str, topic: str, at_least: int, within: float) -> bool:
    """Poll until `topic` holds at least `at_least` records; False at the deadline."""

    async def enough() -> bool:
        return await record_count(bootstrap, topic) >= at_least

    return await until(enough, within, every=0.2)


async def wait_delayed_count(bootstrap: str, topic: str, at_least: int, within: float) -> bool:
    """Poll until delay topic `topic` carries at least `at_least` deliveries (records
    may carry several); False at the deadline."""

    async def enough() -> bool:
        if await record_count(bootstrap, topic) == 0:
            return False
        return len(carried(await read_all(bootstrap, topic))) >= at_least

    return await until(enough, within, every=0.5)


async def group_committed_to_end(
    bootstrap: str, group: str, topics: Iterable[str], within: float = 30
) -> bool:
    """Poll until `group` has committed every partition of `topics` to its end offset (a
    partition that never held a record has nothing to commit)."""
    wanted = {t: await end_offsets(bootstrap, t) for t in topics}

    async def reached() -> bool:
        for topic, ends in wanted.items():
            committed = await committed_offsets(bootstrap, group, topic)
            if not all(max(0, committed.get(p, 0)) >= end for p, end in ends.items()):
                return False
        return True

    return await until(reached, within, every=0.2)
