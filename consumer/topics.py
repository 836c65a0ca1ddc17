"""Creates the service's topics at start, so nothing depends on broker auto-creation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from .config import KafkaConfig
from .kafkatools import client_options

log = structlog.get_logger(__name__)

# Dead letters and delayed deliveries carry the original records plus context, so they can
# outgrow the input's limit (a record the input took must never be one the hand-off cannot).
DEAD_LETTER_MAX_BYTES = 8 * 1024 * 1024
DEAD_LETTER_BYTES = str(DEAD_LETTER_MAX_BYTES)


def durability(config: KafkaConfig) -> dict[str, str]:
    """What every topic the service creates carries: a hand-off is durable once acks=all is
    answered, which means more than one copy only when the topic demands it (the broker's
    own default for min.insync.replicas is often 1)."""
    return {"min.insync.replicas": str(config.effective_min_insync_replicas)}


def _topic(config: KafkaConfig, name: str, settings: dict[str, str] | None = None) -> NewTopic:
    return NewTopic(
        name,
        config.topic_partitions,
        config.replication_factor,
        topic_configs={**durability(config), **(settings or {})},
    )


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
            **durability(config),
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": HOUR_MS,
            "segment.ms": HOUR_MS,
        },
    )


async def ensure_topics(
    config: KafkaConfig,
    delay_topics: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    compacted: Sequence[str] = (),
    *,
    ordered: bool = False,
) -> None:
    """The input, dead-letter and delay topics, `compacted` ones (the attributes topic), and
    with `ordered` (a channel has `ordering: per_user`) the order topic, created where
    missing; a topic that exists is left as it is."""
    admin = AIOKafkaAdminClient(**client_options(config, environ))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            _topic(config, config.topic),
            _topic(config, config.dead_letter_topic, {"max.message.bytes": DEAD_LETTER_BYTES}),
            *(
                _topic(
                    config,
                    name,
                    {
                        "max.message.bytes": DEAD_LETTER_BYTES,
                        # The broker's clock stamps delay records, so a due time can be checked
                        # against it whatever the clock of the replica that wrote the record.
                        "message.timestamp.type": "LogAppendTime",
                    },
                )
                for name in delay_topics or []
            ),
            # Only the latest record of each key is needed, and a tombstone's key goes too,
            # once every reader has had a day to see it.
            *(_topic(config, name, {"cleanup.policy": "compact"}) for name in compacted),
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


async def ensure_compacted(
    config: KafkaConfig, name: str, environ: Mapping[str, str] | None = None
) -> None:
    """A compacted topic of one partition for a small state kept by key (replay progress,
    channel state), created whatever `create_topics` says: it is the service's own."""
    admin = AIOKafkaAdminClient(**client_options(config, environ))
    await admin.start()
    try:
        if name not in await admin.list_topics():
            settings = {"cleanup.policy": "compact", **durability(config)}
            topic = NewTopic(name, 1, config.replication_factor, topic_configs=settings)
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics([topic])
            await _visible(admin, [name])
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
