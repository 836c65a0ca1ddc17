"""Small aiokafka helpers shared by the operator commands (and the tests)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from .config import KafkaConfig
from .kafkasecurity import security_options


def client_options(kafka: KafkaConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What every consumer, producer and admin client of the service connects with: address,
    TLS and SASL. Passwords are read from `environ` (default: the process environment) or
    their files; the SSL context is built once per TLS configuration."""
    return {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        **security_options(kafka, os.environ if environ is None else environ),
    }


async def topic_partitions(topic: str, **options: Any) -> list[TopicPartition]:
    """The partitions of `topic`, from the broker (not from a consumer's cached metadata).

    `options` are client options, as `client_options` gives them."""
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0:
        raise LookupError(f"topic {topic!r} does not exist (error {described['error_code']})")
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer. aiokafka 0.14 lets the CancelledError of an internal task that never
    started escape when stop() follows start() closely; only our own cancellation re-raises."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
