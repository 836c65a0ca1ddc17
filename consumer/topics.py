"""Creates the service's topics at start, so nothing depends on broker auto-creation."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from .config import KafkaConfig
from .kafkatools import client_options

log = structlog.get_logger(__name__)

# Dead letters and delayed deliveries carry the original records plus context, so they can
# outgrow the input's limit (a record the input took must never be one the hand-off cannot).
DEAD_LETTER_MAX_BYTES = 8 * 1024 * 1024
HOUR_MS = str(3_600_000)


def order_topic(config: KafkaConfig) -> NewTopic:
    """One partition, so the ledger has one order (consumer/orderledger.py); compacted, but a
    superseded fact stays until its successor is an hour old, longer than any healthy reader
    lags behind; segments roll hourly so that compaction can reach them."""
    return NewTopic(
        config.order_topic,
        1,
        config.replication_factor,
        topic_configs={
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": HOUR_MS,
            "segment.ms": HOUR_MS,
        },
    )


async def ensure_topics(
    config: KafkaConfig,
    delay_topics: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    ordered: bool = False,
) -> None:
    """`ordered`: a channel has `ordering: per_user`, so the order topic is needed too."""
    admin = AIOKafkaAdminClient(**client_options(config, environ))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(config.topic, config.topic_partitions, config.replication_factor),
            NewTopic(
                config.dead_letter_topic,
                config.topic_partitions,
                config.replication_factor,
                topic_configs={"max.message.bytes": str(DEAD_LETTER_MAX_BYTES)},
            ),
            *(
                NewTopic(
                    name,
                    config.topic_partitions,
                    config.replication_factor,
                    topic_configs={
                        "max.message.bytes": str(DEAD_LETTER_MAX_BYTES),
                        # The broker's clock stamps delay records, so a due time can be checked
                        # against it whatever the clock of the replica that wrote the record.
                        "message.timestamp.type": "LogAppendTime",
                    },
                )
                for name in delay_topics or []
            ),
            *([order_topic(config)] if ordered else []),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            try:
                response = await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another replica was first; the wait below sees whether all exist
            else:
                for name, code, message, *_ in getattr(response, "topic_errors", []):
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise RuntimeError(f"cannot create topic {name!r}: error {code} {message}")
                log.info("topics.created", topics=[t.name for t in missing])
            await _visible(admin, [t.name for t in missing])
    finally:
        await admin.close()


async def _visible(admin: AIOKafkaAdminClient, names: list[str], within: float = 30.0) -> None:
    """Until the brokers' metadata shows the new topics. The consumer subscribes by pattern
    right after this, and a delay topic missing from the metadata it matches then would not
    be read until its next metadata refresh."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while unseen := set(names) - set(await admin.list_topics()):
        if loop.time() > deadline:
            raise RuntimeError(
                f"topics not visible {within:.0f} s after creation: {sorted(unseen)}"
            )
        await asyncio.sleep(0.1)  # metadata propagates in milliseconds; a short poll suffices
