"""What every scenario sends: one campaign, three channels, users with attributes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from consumer.attributes import SqliteAttributeStore

from .kafka import Record

CAMPAIGN = "bench-campaign"
CHANNELS = ("ch0", "ch1", "ch2")
TEMPLATE = {"campaignType": "双十一", "campaignDate": "2026-11-11", "discount": "20%", "quota": 3}
TEMPLATE_TYPES = {
    "campaignType": "string",
    "campaignDate": "string",
    "discount": "string",
    "quota": "integer",
}
USER_ATTRIBUTES = ["hobby", "birthday"]
USERS = 10_000


def secret(channel: str) -> str:
    return f"bench-secret-{channel}"


def path(channel: str) -> str:
    return f"/hooks/{channel}"


def event(index: int, event_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": "user.threshold.reached",
        "schema_version": 1,
        "user_id": f"u-{index % USERS}",
        "campaign_id": CAMPAIGN,
        "behavior": {"name": "add_to_cart", "count": 5, "threshold": 5, "window_seconds": 604800},
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


def encode(document: dict[str, Any]) -> Record:
    return document["user_id"].encode(), orjson.dumps(document)


def events(count: int) -> list[Record]:
    return [encode(event(i)) for i in range(count)]


def attributes(user: int) -> dict[str, Any]:
    return {"hobby": f"game{user % 7}", "birthday": "1992-02-01", "city": "Shanghai"}


async def write_attributes(db: Path) -> None:
    store = SqliteAttributeStore(db)
    try:
        await store.put_many([(f"u-{i}", attributes(i)) for i in range(USERS)])
    finally:
        await store.close()


def write_attributes_sync(db: Path) -> None:
    asyncio.run(write_attributes(db))


@dataclass
class ServiceSetup:
    """A `webhook-consumer run` config for one scenario."""

    bootstrap: str
    prefix: str  # every topic of the run starts with it, so cleanup finds them all
    name: str  # the scenario: group and topics derive from it
    topic: str
    receiver_base: str
    db: Path
    channels: Sequence[str] = CHANNELS
    channel_options: dict[str, Any] = field(default_factory=dict)
    retry: dict[str, Any] = field(default_factory=dict)
    kafka: dict[str, Any] = field(default_factory=dict)
    http_client: str | None = None  # http.client; None: the config's default
    attributes: dict[str, Any] | None = None  # default: SQLite at `db`
    # Default: any free port on loopback; 9108 may be another service's on a shared machine.
    admin: dict[str, Any] | None = None
    log_level: str = "warning"

    @property
    def group(self) -> str:
        return f"{self.prefix}-{self.name}"

    @property
    def environ(self) -> dict[str, str]:
        return {f"BENCH_SECRET_{ch.upper()}": secret(ch) for ch in self.channels}

    def document(self) -> dict[str, Any]:
        return {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "group_id": self.group,
                "topic": self.topic,
                "dead_letter_topic": f"{self.group}-dlq",
                "retry_topic_prefix": f"{self.group}-retry",
                **self.kafka,
            },
            "attributes": self.attributes or {"backend": "sqlite", "url": f"sqlite:///{self.db}"},
            "allowed_networks": ["127.0.0.0/8"],
            **({"http": {"client": self.http_client}} if self.http_client else {}),
            "retry": self.retry,
            "logging": {"level": self.log_level, "format": "json"},
            "admin": self.admin or {"host": "127.0.0.1", "port": 0},
            "channels": [
                {
                    "name": ch,
                    "url": f"{self.receiver_base}{path(ch)}",
                    "secret_env": f"BENCH_SECRET_{ch.upper()}",
                    "template_params": TEMPLATE_TYPES,
                    "user_attributes": USER_ATTRIBUTES,
                    **self.channel_options.get("*", {}),
                    **self.channel_options.get(ch, {}),
                }
                for ch in self.channels
            ],
            "campaigns": [
                {"id": CAMPAIGN, "channels": list(self.channels), "template_params": TEMPLATE}
            ],
        }

    def write(self, folder: Path) -> Path:
        config = folder / f"{self.name}.yaml"
        config.write_text(yaml.safe_dump(self.document(), allow_unicode=True), encoding="utf-8")
        return config
