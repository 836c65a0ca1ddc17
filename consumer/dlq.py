"""Operating the dead-letter topic: `dlq stats` and `dlq replay`.

Replay progress lives in a small compacted topic of the deployment (`<dead-letter topic>.replays`),
one entry per replay request: the filters as the operator typed them, the window they resolved
to on the first run (`--since 2h` means two hours before the *first* run), the end offsets of
the dead-letter topic then, and how far the replay got. Repeating the same command resumes or
sends nothing; `--reset` starts over. Nothing else is left behind: no consumer group per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import ValidationError

from .config import ServiceConfig
from .deadletter import DeadLetter
from .delaypath import DelayedDelivery as Delayed
from .delaypath import delay_levels, delay_topic, headers_for
from .kafkaprobe import probe
from .kafkatools import client_options, stop_consumer, topic_partitions
from .ratelimit import LocalLimiter
from .topics import DEAD_LETTER_MAX_BYTES, durability

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_BATCH = 500  # letters produced before their acknowledgements are awaited and progress saved


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
class Request:
    """A replay's filters exactly as typed: the same words name the same replay."""

    channel: str | None = None
    reason: str | None = None
    since: str | None = None
    until: str | None = None

    def key(self) -> str:
        words = orjson.dumps([self.channel, self.reason, self.since, self.until])
        return hashlib.sha256(words).hexdigest()[:16]

    def describe(self) -> str:
        given = {k: v for k, v in self.words().items() if v is not None}
        return " ".join(f"--{k} {v}" for k, v in given.items()) or "(all)"

    def words(self) -> dict[str, str | None]:
        return {
            "channel": self.channel,
            "reason": self.reason,
            "since": self.since,
            "until": self.until,
        }

    def resolve(self, now: datetime) -> Filters:
        """Raises ValueError for a time that cannot be read."""
        return Filters(
            channel=self.channel,
            reason=self.reason,
            since=parse_time(self.since, now) if self.since else None,
            until=parse_time(self.until, now) if self.until else None,
        )


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


@dataclass(slots=True)
class Progress:
    """One replay request's entry in the progress topic."""

    request: Request
    filters: Filters
    ends: dict[int, int]  # the dead-letter topic's end offsets at the first run
    next: dict[int, int]  # per partition, the first offset not replayed yet
    replayed: int = 0
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def finished(self) -> bool:
        return all(self.next.get(p, 0) >= end for p, end in self.ends.items())

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "request": self.request.words(),
                "since": self.filters.since,
                "until": self.filters.until,
                "ends": self.ends,
                "next": self.next,
                "replayed": self.replayed,
                "updated_at": self.updated_at,
            },
            option=orjson.OPT_NON_STR_KEYS,
        )

    @classmethod
    def decode(cls, value: bytes) -> Progress:
        data = orjson.loads(value)
        request = Request(**data["request"])
        when = {
            k: None if data[k] is None else datetime.fromisoformat(data[k])
            for k in ("since", "until")
        }
        return cls(
            request=request,
            filters=Filters(request.channel, request.reason, when["since"], when["until"]),
            ends={int(p): o for p, o in data["ends"].items()},
            next={int(p): o for p, o in data["next"].items()},
            replayed=data["replayed"],
            updated_at=datetime.fromisoformat(data["updated_at"]),
        )


def progress_topic(config: ServiceConfig) -> str:
    return f"{config.kafka.dead_letter_topic}.replays"


@dataclass(frozen=True, slots=True)
class Letter:
    tp: TopicPartition
    offset: int
    letter: DeadLetter | None  # None: not a dead-letter record at all


async def _read(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
) -> AsyncIterator[Letter]:
    """Every record up to the given end offsets: new letters do not count, so a read
    terminates even while the service keeps dead-lettering."""
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


def _consumer(config: ServiceConfig) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(config.kafka),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=DEAD_LETTER_MAX_BYTES * 2,
        max_partition_fetch_bytes=DEAD_LETTER_MAX_BYTES,
    )


@dataclass
class Row:
    count: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None


@dataclass
class Stats:
    rows: dict[tuple[str, str], Row]
    replays: list[Progress]


async def stats(config: ServiceConfig) -> Stats:
    await probe(config.kafka)
    consumer = _consumer(config)
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
    replays = await _load_progress(config)
    return Stats(dict(rows), sorted(replays.values(), key=lambda p: p.updated_at))


async def forget_finished(config: ServiceConfig) -> int:
    """Remove the progress entries of finished replays; their commands then start over."""
    finished = [k for k, p in (await _load_progress(config)).items() if p.finished]
    if finished:
        producer = AIOKafkaProducer(**client_options(config.kafka), acks="all")
        await producer.start()
        try:
            for key in finished:
                await producer.send_and_wait(progress_topic(config), None, key=key.encode())
        finally:
            await producer.stop()
    return len(finished)


async def _load_progress(config: ServiceConfig) -> dict[str, Progress]:
    """Every replay's latest entry (a compacted topic holds few, small records)."""
    topic = progress_topic(config)
    try:
        tps = await topic_partitions(topic, **client_options(config.kafka))
    except LookupError:
        return {}
    consumer = _consumer(config)
    await consumer.start()
    entries: dict[str, Progress] = {}
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while pending:
            for records in (await consumer.getmany(*pending, timeout_ms=500)).values():
                for record in records:
                    key = (record.key or b"").decode()
                    if record.value is None:
                        entries.pop(key, None)
                    else:
                        entries[key] = Progress.decode(record.value)
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await stop_consumer(consumer)
    return entries


async def _ensure_progress_topic(config: ServiceConfig) -> None:
    admin = AIOKafkaAdminClient(**client_options(config.kafka))
    await admin.start()
    try:
        if progress_topic(config) not in await admin.list_topics():
            topic = NewTopic(
                progress_topic(config),
                1,
                config.kafka.replication_factor,
                topic_configs={"cleanup.policy": "compact", **durability(config.kafka)},
            )
            with contextlib.suppress(TopicAlreadyExistsError):  # another run was first
                await admin.create_topics([topic])
    finally:
        await admin.close()


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
    resumes where it stopped, and repeating a finished one sends nothing again.
    """
    kafka = config.kafka
    await probe(kafka)
    report = ReplayReport()
    key = request.key()
    stored = None if reset else (await _load_progress(config)).get(key)
    if not dry_run:
        await _ensure_progress_topic(config)
    consumer = _consumer(config)
    producer = AIOKafkaProducer(
        **client_options(kafka), acks="all", max_request_size=DEAD_LETTER_MAX_BYTES
    )
    await consumer.start()
    await producer.start()
    target = delay_topic(kafka.retry_topic_prefix, delay_levels(config.retry)[0])
    channels = {channel.name for channel in config.channels}
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
        async for item in _read(consumer, ends_by_tp):
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
                refusal = _refusal(letter, channels)
                if refusal is not None:
                    report.refused[refusal] += 1
                elif not dry_run:
                    await pace.acquire()
                    sent.append(await _send(letter, config, target, producer))
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


def _refusal(letter: DeadLetter, channels: set[str]) -> str | None:
    """Why a matching letter cannot be sent again, or None when it can."""
    if letter.truncated:
        return "truncated"  # stored without its events: the sources say where they are
    if letter.channel is not None and letter.delivery_id is not None:
        return None if letter.channel in channels else "channel_not_configured"
    [event] = letter.events if len(letter.events) == 1 else [None]
    return None if isinstance(event, dict) else "not_an_event"


async def _send(
    letter: DeadLetter, config: ServiceConfig, target: str, producer: AIOKafkaProducer
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
            first_attempt_at=_epoch(letter.first_attempt_at),
            last_attempt_at=_epoch(letter.last_attempt_at),
            last_error=letter.reason,
            due_ms=int(datetime.now(UTC).timestamp() * 1000),
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
    published: asyncio.Future[Any] = await producer.send(
        config.kafka.topic, orjson.dumps(event), key=key.encode() if isinstance(key, str) else None
    )
    return published


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()
