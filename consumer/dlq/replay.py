"""`dlq replay`: matching dead letters sent on their way again, paced, resumable."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from consumer.catalog import expire_after
from consumer.config import ServiceConfig
from consumer.deadletter import DeadLetter
from consumer.delaypath import DelayedDelivery as Delayed
from consumer.delaypath import delay_levels, delay_topic, headers_for
from consumer.dispatcher import EXPIRY_HEADER, IGNORE_EXPIRY
from consumer.events import occurred_at_of
from consumer.kafkaprobe import probe
from consumer.kafkatools import client_options, stop_consumer, topic_partitions
from consumer.outcome import deadline, expired
from consumer.ratelimit import LocalLimiter
from consumer.topics import DEAD_LETTER_MAX_BYTES

from .filters import Request
from .progress import Progress, ensure_progress_topic, load_progress, progress_topic
from .reading import letter_consumer, read_letters

_BATCH = 500  # letters produced before their acknowledgements are awaited and progress saved


@dataclass
class ReplayReport:
    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # why matching letters were not sent
    interrupted: bool = False
    resumed: bool = False
    progress: Progress | None = None


async def replay(
    config: ServiceConfig,
    request: Request,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    reset: bool = False,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_match: Callable[[DeadLetter], None] | None = None,
    per_second: int | None = None,
) -> ReplayReport:
    """Re-deliver matching dead letters through the first delay topic, due now, ids kept,
    at most `per_second` of them a second when given.

    Progress is saved after each batch's produces are acknowledged: an interrupted replay
    resumes where it stopped, and repeating a finished one sends nothing again. Letters past
    their freshness limit (`expire_after_seconds`, by today's config) are not sent, unless the
    request says `ignore_expiry`.
    """
    kafka = config.kafka
    await probe(kafka)
    report = ReplayReport()
    key = request.key()
    stored = None if reset else (await load_progress(config)).get(key)
    if not dry_run:
        await ensure_progress_topic(config)
    consumer = letter_consumer(config)
    producer = AIOKafkaProducer(
        **client_options(kafka), acks="all", max_request_size=DEAD_LETTER_MAX_BYTES
    )
    await consumer.start()
    await producer.start()
    target = delay_topic(kafka.retry_topic_prefix, delay_levels(config.retry)[0])
    channels = {channel.name for channel in config.channels}
    limits = _Limits(config)
    try:
        tps = await topic_partitions(kafka.dead_letter_topic, **client_options(kafka))
        consumer.assign(tps)
        if stored is None:
            ends = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
            starts = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
            progress = Progress(request, request.resolve(datetime.now(UTC)), ends, starts)
        else:
            progress, report.resumed = stored, True
        report.progress = progress
        for tp in tps:
            consumer.seek(tp, progress.next.get(tp.partition, progress.ends.get(tp.partition, 0)))
        ends_by_tp = {tp: progress.ends.get(tp.partition, 0) for tp in tps}
        total = sum(max(0, e - progress.next.get(tp.partition, e)) for tp, e in ends_by_tp.items())
        sent: list[asyncio.Future[Any]] = []
        # A burst of one so a paced replay starts at its rate, not with a backlog's worth.
        pace = LocalLimiter(per_second)
        async for item in read_letters(consumer, ends_by_tp):
            if (stop is not None and stop.is_set()) or (
                limit is not None and report.matched >= limit
            ):
                report.interrupted = stop is not None and stop.is_set()
                break
            report.scanned += 1
            letter = item.letter
            if letter is not None and progress.filters.match(letter):
                report.matched += 1
                if on_match is not None:
                    on_match(letter)
                expires_at = None if request.ignore_expiry else limits.deadline(letter)
                refusal = _refusal(letter, channels, expires_at)
                if refusal is not None:
                    report.refused[refusal] += 1
                elif not dry_run:
                    await pace.acquire()
                    sent.append(
                        await _send(
                            letter, config, target, producer, expires_at, request.ignore_expiry
                        )
                    )
            progress.next[item.tp.partition] = item.offset + 1
            if on_progress is not None:
                on_progress(report.scanned, total)
            if len(sent) >= _BATCH:
                report.replayed += await _settle(sent, progress, config, producer)
        if not dry_run:
            report.replayed += await _settle(sent, progress, config, producer)
    finally:
        await producer.stop()
        await stop_consumer(consumer)
    return report


async def _settle(
    sent: list[asyncio.Future[Any]], progress: Progress, config: ServiceConfig, producer: Any
) -> int:
    """Wait for the batch's acknowledgements, then save how far the replay got."""
    count = len(sent)
    await asyncio.gather(*sent)
    sent.clear()
    progress.replayed += count
    progress.updated_at = datetime.now(UTC)
    key = progress.request.key().encode()
    await producer.send_and_wait(progress_topic(config), progress.encode(), key=key)
    return count


class _Limits:
    """The freshness limit of each campaign's channel, as configured now."""

    def __init__(self, config: ServiceConfig) -> None:
        self._channels = {ch.name: ch.expire_after_seconds for ch in config.channels}
        self._routes = {
            (campaign.id, name): expire_after(campaign.expire_after_seconds, self._channels[name])
            for campaign in config.campaigns
            for name in campaign.channels
        }
        self._campaigns = {campaign.id: campaign.channels for campaign in config.campaigns}

    def deadline(self, letter: DeadLetter) -> float | None:
        """When the letter's delivery stopped (or stops) being worth sending; None: never. A
        record that never became a delivery goes stale only once stale for every channel of
        its campaign (the service then checks each channel at intake)."""
        occurred = [t for t in map(occurred_at_of, letter.events) if t is not None]
        if not occurred:
            return None
        campaign = letter.campaign_id or ""
        if letter.channel is not None:
            channel = letter.channel
            limit = self._routes.get((campaign, channel), self._channels.get(channel))
        else:
            routes = [self._routes[(campaign, name)] for name in self._campaigns.get(campaign, ())]
            limits = [limit for limit in routes if limit is not None]
            limit = max(limits) if limits and len(limits) == len(routes) else None
        return deadline(min(occurred), limit, datetime.now(UTC).timestamp())


def _refusal(letter: DeadLetter, channels: set[str], expires_at: float | None) -> str | None:
    """Why a matching letter cannot be sent again, or None when it can."""
    if letter.truncated:
        return "truncated"  # stored without its events: the sources say where they are
    if letter.channel is not None and letter.delivery_id is not None:
        if letter.channel not in channels:
            return "channel_not_configured"
    else:
        [event] = letter.events if len(letter.events) == 1 else [None]
        if not isinstance(event, dict):
            return "not_an_event"
    if expired(expires_at, datetime.now(UTC).timestamp()) is not None:
        return "expired"
    return None


async def _send(
    letter: DeadLetter,
    config: ServiceConfig,
    target: str,
    producer: AIOKafkaProducer,
    expires_at: float | None,
    ignore_expiry: bool,
) -> asyncio.Future[Any]:
    """Produce the letter back on its way; returns the acknowledgement to await."""
    if letter.channel is not None and letter.delivery_id is not None:
        record = Delayed(
            delivery_id=letter.delivery_id,
            channel=letter.channel,
            campaign_id=letter.campaign_id or "",
            template_param=letter.template_param or {},
            user_attr=letter.user_attr or [],
            events=letter.events,
            sources=letter.sources,
            attempts=letter.attempts,
            rounds=0,  # a fresh schedule: the operator says the receiver is fixed
            created_at=datetime.now(UTC).timestamp(),  # and a fresh maximum age
            expires_at=expires_at,
            first_attempt_at=_epoch(letter.first_attempt_at),
            last_attempt_at=_epoch(letter.last_attempt_at),
            last_error=letter.reason,
            due_ms=int(datetime.now(UTC).timestamp() * 1000),
            traceparent=letter.traceparent,  # the replay goes on in the record's trace
            tracestate=letter.tracestate,
        )
        ack: asyncio.Future[Any] = await producer.send(
            target,
            record.model_dump_json().encode(),
            key=record.delivery_id.encode(),
            headers=headers_for(record, config.kafka.group_id),
        )
        return ack
    # A record that never became a delivery (invalid event, unknown campaign, attributes
    # unavailable): publish the original event to the input again, for a fixed config.
    event = letter.events[0]
    key = event.get("user_id")
    # The service checks each channel's limit at intake, unless told to ignore them all.
    ignoring = [(EXPIRY_HEADER, IGNORE_EXPIRY)] if ignore_expiry else None
    published: asyncio.Future[Any] = await producer.send(
        config.kafka.topic,
        orjson.dumps(event),
        key=key.encode() if isinstance(key, str) else None,
        headers=ignoring,
    )
    return published


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()
