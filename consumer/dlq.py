"""Operating the dead-letter topic: `dlq stats` and `dlq replay`."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from .config import ServiceConfig
from .deadletter import DeadLetter
from .delaypath import DelayedDelivery as Delayed
from .delaypath import KafkaDelaySink, delay_topic
from .kafkaprobe import probe
from .kafkatools import client_options, stop_consumer, topic_partitions

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when no zone is given) or an age like `30m`, `2h`, `7d`."""
    match = _RELATIVE.match(text.strip())
    if match:
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time or an age like 2h, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Filters:
    channel: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def match(self, letter: DeadLetter) -> bool:
        return (
            (self.channel is None or letter.channel == self.channel)
            and (self.reason is None or letter.reason.kind == self.reason)
            and (self.since is None or letter.dead_lettered_at >= self.since)
            and (self.until is None or letter.dead_lettered_at < self.until)
        )

    def fingerprint(self) -> str:
        """Replays with the same filters share progress; other filters start from the top."""
        text = repr((self.channel, self.reason, self.since, self.until))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Letter:
    tp: TopicPartition
    offset: int
    letter: DeadLetter | None  # None: not a dead-letter record at all


async def _read(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
) -> AsyncIterator[Letter]:
    """Every record up to the end offsets taken at the start: new letters do not count, so a
    read terminates even while the service keeps dead-lettering."""
    pending = {tp for tp, end in ends.items() if await consumer.position(tp) < end}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset >= ends[tp]:
                    break
                try:
                    letter = DeadLetter.model_validate_json(record.value or b"")
                except ValidationError:
                    letter = None
                yield Letter(tp, record.offset, letter)
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}


@dataclass
class Row:
    count: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None


async def stats(config: ServiceConfig) -> dict[tuple[str, str], Row]:
    await probe(config.kafka)
    consumer = AIOKafkaConsumer(
        **client_options(config.kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    rows: dict[tuple[str, str], Row] = defaultdict(Row)
    try:
        tps = await topic_partitions(config.kafka.dead_letter_topic, **client_options(config.kafka))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async for item in _read(consumer, ends):
            letter = item.letter
            key = (
                ("(unreadable)", "-")
                if letter is None
                else (letter.channel or "-", letter.reason.kind)
            )
            row = rows[key]
            row.count += 1
            if letter is not None:
                at = letter.dead_lettered_at
                row.oldest = at if row.oldest is None else min(row.oldest, at)
                row.newest = at if row.newest is None else max(row.newest, at)
    finally:
        await stop_consumer(consumer)
    return dict(rows)


@dataclass
class ReplayReport:
    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    skipped: int = 0  # matched but nothing to replay (an unreadable record or a raw value)
    interrupted: bool = False


async def replay(
    config: ServiceConfig,
    filters: Filters,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_match: Callable[[DeadLetter], None] | None = None,
) -> ReplayReport:
    """Re-deliver matching dead letters through the delay path, due now, ids kept.

    Progress is committed under a consumer group named after the filters, after each batch's
    produces are acknowledged: an interrupted replay resumes where it stopped, and a second
    replay with the same filters sends nothing that was already replayed.
    """
    kafka = config.kafka
    await probe(kafka)
    consumer = AIOKafkaConsumer(
        **client_options(kafka),
        group_id=f"{kafka.group_id}-dlq-replay-{filters.fingerprint()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**client_options(kafka), acks="all")
    await consumer.start()
    await producer.start()
    report = ReplayReport()
    sink = KafkaDelaySink(producer)
    first_level = delay_topic(kafka.retry_topic_prefix, config.retry.park_seconds)
    try:
        tps = await topic_partitions(kafka.dead_letter_topic, **client_options(kafka))
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = {tp: await consumer.position(tp) for tp in tps}
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        done: dict[TopicPartition, int] = {}
        async for item in _read(consumer, ends):
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            if limit is not None and report.matched >= limit:
                break
            report.scanned += 1
            letter = item.letter
            if letter is not None and filters.match(letter):
                report.matched += 1
                if on_match is not None:
                    on_match(letter)
                if not dry_run:
                    sent = await _replay_one(letter, kafka.topic, first_level, sink, producer)
                    report.replayed += sent
                    report.skipped += 1 - sent
            done[item.tp] = item.offset + 1
            if on_progress is not None:
                on_progress(report.scanned, total)
            if not dry_run and report.scanned % 200 == 0:
                await consumer.commit(dict(done))
        if not dry_run and done:
            await consumer.commit(done)
    finally:
        await producer.stop()
        await stop_consumer(consumer)
    return report


async def _replay_one(
    letter: DeadLetter,
    input_topic: str,
    topic: str,
    sink: KafkaDelaySink,
    producer: AIOKafkaProducer,
) -> int:
    """1 if the letter went back on its way, 0 if it holds nothing that can be sent again."""
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
            first_attempt_at=_epoch(letter.first_attempt_at),
            last_attempt_at=_epoch(letter.last_attempt_at),
            last_error=letter.reason,
            due_ms=int(time.time() * 1000),
        )
        await sink.write(topic, record)
        return 1
    # A record that never became a delivery (invalid event, unknown campaign): publish the
    # original event to the input again, so a fixed config routes it.
    [event] = letter.events if len(letter.events) == 1 else [None]
    if not isinstance(event, dict):
        return 0
    key = event.get("user_id")
    await producer.send_and_wait(
        input_topic, orjson.dumps(event), key=key.encode() if isinstance(key, str) else None
    )
    return 1


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()
