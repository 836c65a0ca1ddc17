"""`webhook-consumer demo`: sample config, attributes, a verifying receiver and events, end to end.

The users' attributes are published to an attributes topic, as upstream would; the service
follows it into its store before it delivers.

Needs only a running Kafka broker; everything else lives in a temporary folder and fresh topics,
so the demo can run again and again against the same broker.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from .attributes.publisher import publish_jsonl
from .attributes.urls import shown_url
from .config import KafkaConfig, parse_config
from .kafkatools import client_options
from .receiver import Receiver
from .service import run_service
from .topics import ensure_topics

USERS = {
    "u-10086": {"hobby": "game1", "birthday": "1992-02-01", "tier": "gold"},
    "u-10087": {"hobby": "game2", "birthday": "1990-02-01", "tier": "silver"},
    "u-10088": {"hobby": "跑步", "birthday": "1988-08-08", "tier": "gold"},
    "u-10089": {"hobby": "chess", "birthday": "1999-12-31", "tier": "bronze"},
}
DEMO_KEY_PREFIX = "webhook-consumer-demo:"
CAMPAIGN_CHANNELS = {
    "double11-coupon": ["coupon-system", "push-service"],
    "loyalty-boost": ["loyalty-points"],
}


def demo_config(
    bootstrap: str, receiver: Receiver, folder: Path, suffix: str, redis_url: str | None = None
) -> dict[str, Any]:
    attributes = (
        {"backend": "sqlite", "url": f"sqlite:///{folder / 'attributes.db'}"}
        if redis_url is None
        else {"backend": "redis", "url": redis_url, "key_prefix": f"{DEMO_KEY_PREFIX}{suffix}:"}
    )
    attributes["topic"] = f"demo-user-attributes-{suffix}"  # the store is kept from it
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"webhook-consumer-demo-{suffix}",
            "topic": f"demo-threshold-events-{suffix}",
            "dead_letter_topic": f"demo-dead-letters-{suffix}",
            "commit_interval_ms": 200,
            "shutdown_grace_seconds": 10,
        },
        "attributes": attributes,
        "allowed_networks": ["127.0.0.0/8"],
        "retry": {"quick_attempts": 3, "backoff_initial_ms": 50, "backoff_max_ms": 500},
        "logging": {"level": "warning", "format": "console"},
        "admin": {"host": "127.0.0.1", "port": 0},  # any free port: a service may run beside it
        "channels": [
            {
                "name": "coupon-system",
                "url": receiver.url("coupon-system"),
                "query": {"source": "gio"},
                "secret_env": "DEMO_COUPON_SECRET",
                "template_params": {
                    "campaignType": "string",
                    "discount": "string",
                    "quota": "integer",
                },
                "user_attributes": ["hobby", "birthday"],
                "rate_limit": {"per_second": 50, "burst": 50},
            },
            {
                "name": "push-service",
                "url": receiver.url("push-service"),
                "secret_env": "DEMO_PUSH_SECRET",
                "template_params": {"title": "string"},
                "user_attributes": ["hobby"],
                "max_concurrency": 4,
            },
            {
                "name": "loyalty-points",
                "url": receiver.url("loyalty-points"),
                "secret_env": "DEMO_LOYALTY_SECRET",
                "template_params": {"points": "integer"},
                "user_attributes": ["tier"],
                "batch": {"max_users": 10, "linger_ms": 300},
            },
        ],
        "campaigns": [
            {
                "id": "double11-coupon",
                "channels": CAMPAIGN_CHANNELS["double11-coupon"],
                "template_params": {
                    "campaignType": "双十一",
                    "discount": "20%",
                    "quota": 3,
                    "title": "Your coupon is ready",
                },
            },
            {
                "id": "loyalty-boost",
                "channels": CAMPAIGN_CHANNELS["loyalty-boost"],
                "template_params": {"points": 500},
            },
        ],
    }


def sample_events(count: int) -> list[tuple[str, dict[str, Any]]]:
    users = list(USERS)
    campaigns = list(CAMPAIGN_CHANNELS)
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
        (
            users[i % len(users)],
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "user.threshold.reached",
                "schema_version": 1,
                "user_id": users[i % len(users)],
                "campaign_id": campaigns[i % len(campaigns)],
                "behavior": {
                    "name": "add_to_cart",
                    "count": 5,
                    "threshold": 5,
                    "window_seconds": 604800,
                },
                "occurred_at": now,
            },
        )
        for i in range(count)
    ]


async def run_demo(bootstrap: str, event_count: int, redis_url: str | None = None) -> int:
    """Everything end to end; attributes in Redis at `redis_url` if given, else in SQLite."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)  # a log file has no width to fit
    keys = {
        name: secrets.token_hex(16) for name in ("coupon-system", "push-service", "loyalty-points")
    }
    environ = {
        "DEMO_COUPON_SECRET": keys["coupon-system"],
        "DEMO_PUSH_SECRET": keys["push-service"],
        "DEMO_LOYALTY_SECRET": keys["loyalty-points"],
    }
    receiver = Receiver(keys)
    await receiver.start()
    suffix = uuid.uuid4().hex[:8]
    try:
        with tempfile.TemporaryDirectory(prefix="webhook-consumer-demo-") as tmp:
            config = parse_config(
                demo_config(bootstrap, receiver, Path(tmp), suffix, redis_url), "demo", environ
            )
            console.print(f"receiver listening on 127.0.0.1:{receiver.port}; Kafka at {bootstrap}")
            users = Path(tmp) / "users.jsonl"
            users.write_bytes(
                b"".join(
                    orjson.dumps({"user_id": user, "attributes": attributes}) + b"\n"
                    for user, attributes in USERS.items()
                )
            )
            published = await publish_jsonl(config, users, progress=False)
            where = "SQLite" if redis_url is None else f"Redis at {shown_url(redis_url)}"
            console.print(
                f"published attributes of {published.published} users to "
                f"{config.attributes.topic}; the service keeps them in {where}"
            )
            await ensure_topics(config.kafka)
            events = sample_events(event_count)
            await _publish(config.kafka, events)
            console.print(f"published {len(events)} events to {config.kafka.topic}")
            expected = sum(len(CAMPAIGN_CHANNELS[e["campaign_id"]]) for _, e in events)
            stop = asyncio.Event()
            service = asyncio.create_task(run_service(config, stop, environ))
            arrived = await receiver.wait_for(lambda r: _pairs(r) >= expected, within=90)
            stop.set()
            await service
            if redis_url is not None:
                await _drop_demo_users(redis_url, config.attributes.key_prefix)
    finally:
        await receiver.stop()
    _print_table(console, receiver)
    delivered = _pairs(receiver)
    console.print(
        f"{delivered}/{expected} (event, channel) pairs delivered, "
        f"{sum(r.verified for r in receiver.received)}/{len(receiver.received)} "
        "signatures verified"
    )
    ok = arrived and all(r.verified for r in receiver.received)
    console.print("[bold green]demo passed[/]" if ok else "[bold red]demo failed[/]")
    return 0 if ok else 1


async def _drop_demo_users(redis_url: str, key_prefix: str) -> None:
    """Leave a shared Redis as it was: every key under this run's own prefix (the users and
    how far the topic was read) goes."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{key_prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _pairs(receiver: Receiver) -> int:
    """Distinct (event, channel) pairs delivered: one per user entry of each unique delivery."""
    seen: dict[str, int] = {}
    for r in receiver.delivered():
        seen[r.delivery_id] = max(1, len(r.body.get("userAttr", [])))
    return sum(seen.values())


async def _publish(kafka: KafkaConfig, events: list[tuple[str, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(**client_options(kafka), acks="all")
    await producer.start()
    try:
        sends = [
            await producer.send(kafka.topic, orjson.dumps(event), key=user.encode())
            for user, event in events
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def _print_table(console: Console, receiver: Receiver) -> None:
    table = Table(title="webhooks received (signature checked over the raw body)")
    for column in ("channel", "delivery id", "attempt", "templateParam", "userAttr", "verified"):
        table.add_column(column, overflow="fold")
    for r in sorted(receiver.received, key=lambda r: (r.channel, r.at)):
        table.add_row(
            r.channel,
            r.delivery_id[:8],
            str(r.attempt),
            orjson.dumps(r.body.get("templateParam")).decode(),
            orjson.dumps(r.body.get("userAttr")).decode(),
            "[green]✓[/]" if r.verified else "[red]✗[/]",
        )
    console.print(table)
