"""The delay path: deliveries wait on Kafka delay topics until due, then are tried again.

A deployment's delay topics are `<prefix>.<delay>`, one per *level*: each distinct delay of
the retry schedule, plus a ladder of shorter waits between them (for an open circuit or a
full lane). A wait rides the shortest level that covers it, so records of one topic wait
about as long as their neighbours and due times grow along a partition; the listener reads a
little ahead of a head that is not due yet, so a longer wait never holds back a shorter one
for long. Every record names its consumer group: another deployment's records are skipped.
Unordered deliveries of one channel that meet on their way to one topic share a record
(`delaybundle`).
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .catalog import Catalog
from .config import RetryConfig, ServiceConfig
from .deadletter import Reason, SourceRef
from .delaybundle import BUNDLE_SCHEMA_VERSION, Bundle, Member
from .delivery import Delivery, Source
from .handoff import ACKNOWLEDGED, Handoff
from .outcome import Kind, Outcome
from .tracecontext import parse as parse_trace

DUE_HEADER = "due-ms"
GROUP_HEADER = "group"
CHANNEL_HEADER = "channel"
CREATED_HEADER = "created-ms"
EXPIRES_HEADER = "expires-ms"

_LADDER_RATIO = 4.0  # each wait level is this many times the one below
_NEAR = 1.5  # a ladder level this close to a schedule delay adds nothing
_LEVEL = re.compile(r"\.(\d+)(s|ms)$")


def delay_topic(prefix: str, seconds: float) -> str:
    label = f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"
    return f"{prefix}.{label}"


def level_of(topic: str, prefix: str) -> float | None:
    """The delay a topic of this deployment stands for; None if it is not one of its topics."""
    if not topic.startswith(prefix + "."):
        return None
    match = _LEVEL.fullmatch(topic, len(prefix))
    if match is None:
        return None
    amount, unit = match.groups()
    return int(amount) / (1000 if unit == "ms" else 1)


def topic_pattern(prefix: str) -> str:
    """Every delay topic of a deployment, today's levels and retired ones alike."""
    return re.escape(prefix) + r"\.[0-9]+(s|ms)"


def delay_levels(retry: RetryConfig) -> tuple[float, ...]:
    """The schedule's delays, plus a ladder of waits from the shortest delay up: x4 each step,
    skipping steps that land near a schedule delay. [5, 300, 1800, ...] gives 5, 20, 80, 300,
    1800, ...: an open circuit's 30 s wait rides the 80 s topic, not the 300 s one.

    The longest wait for a probe (the breaker's largest cool-down) gets a level too: with a
    short schedule, a long outage would otherwise rewrite every held delivery at the
    schedule's longest delay instead of once per probe."""
    schedule = sorted(set(retry.schedule_seconds)) or [5.0]
    longest_probe = retry.circuit_breaker.max_cooldown_seconds
    fixed = sorted({*schedule, longest_probe})
    levels = set(fixed)
    step = fixed[0] * _LADDER_RATIO
    while step < fixed[-1]:
        if all(max(step, d) / min(step, d) >= _NEAR for d in fixed):
            levels.add(step)
        step *= _LADDER_RATIO
    return tuple(sorted(levels))


def delay_topics(config: ServiceConfig) -> list[str]:
    prefix = config.kafka.retry_topic_prefix
    return [delay_topic(prefix, level) for level in delay_levels(config.retry)]


def level_for(seconds: float, levels: Sequence[float]) -> float:
    """The shortest level covering a wait, else the longest (the wait is then cut to it and
    re-evaluated when it comes back). `levels` is sorted, as delay_levels gives them."""
    return levels[min(bisect_left(levels, seconds), len(levels) - 1)]


class DelayedDelivery(BaseModel):
    """A delivery waiting on a delay topic: everything needed to send it again unchanged."""

    model_config = ConfigDict(frozen=True, title="DelayedDelivery")

    schema_version: int = 1
    delivery_id: str
    channel: str
    campaign_id: str
    template_param: dict[str, Any]
    user_attr: list[dict[str, Any]]
    events: list[Any]
    sources: list[SourceRef]
    attempts: int
    rounds: int
    parks: int = 0
    created_at: float | None = None  # absent in records written before max_age existed
    expires_at: float | None = None  # Unix time it stops being worth sending; None: never
    first_attempt_at: float | None
    last_attempt_at: float | None
    last_error: Reason | None
    due_ms: int
    # W3C trace context of the first record (our span for it): later attempts stay in its trace.
    traceparent: str | None = None
    tracestate: str | None = None

    @classmethod
    def of(cls, delivery: Delivery, due_ms: int) -> DelayedDelivery:
        # Built from our own validated objects: skip re-validation, it is on the hot path when
        # a receiver fails and thousands of deliveries move to the delay path at once.
        error = delivery.last_error
        trace = delivery.trace
        return cls.model_construct(
            schema_version=1,
            delivery_id=delivery.id,
            channel=delivery.channel.name,
            campaign_id=delivery.campaign_id,
            template_param=dict(delivery.template_param),
            user_attr=delivery.user_attr,
            events=delivery.events,
            sources=[
                SourceRef.model_construct(topic=s.topic, partition=s.partition, offset=s.offset)
                for s in delivery.sources
            ],
            attempts=delivery.attempts,
            rounds=delivery.rounds,
            parks=delivery.parks,
            created_at=delivery.created_at,
            expires_at=delivery.expires_at,
            first_attempt_at=delivery.first_attempt_at,
            last_attempt_at=delivery.last_attempt_at,
            last_error=None
            if error is None
            else Reason.model_construct(
                kind=error.kind.value, status=error.status, message=error.message
            ),
            due_ms=due_ms,
            traceparent=None if trace is None else trace.traceparent,
            tracestate=None if trace is None else trace.state,
        )

    def to_delivery(self, catalog: Catalog) -> Delivery | None:
        """The delivery again, bound to today's channel config; None if the channel is gone."""
        channel = catalog.channels.get(self.channel)
        if channel is None:
            return None
        error = self.last_error
        return Delivery(
            id=self.delivery_id,
            channel=channel,
            campaign_id=self.campaign_id,
            template_param=self.template_param,
            user_attr=self.user_attr,
            events=self.events,
            sources=[Source(s.topic, s.partition, s.offset) for s in self.sources],
            attempts=self.attempts,
            rounds=self.rounds,
            parks=self.parks,
            created_at=self.created_at or self.first_attempt_at or time.time(),
            expires_at=self.expires_at,
            first_attempt_at=self.first_attempt_at,
            last_attempt_at=self.last_attempt_at,
            last_error=None
            if error is None
            else Outcome(
                Kind(error.kind) if error.kind in Kind.__members__.values() else Kind.HTTP_STATUS,
                retryable=True,
                status=error.status,
                message=error.message,
            ),
            trace=None
            if self.traceparent is None
            else parse_trace(self.traceparent, self.tracestate),
        )


def header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


def due_ms_of(headers: Iterable[tuple[str, bytes]] | None) -> int | None:
    """The due time from a record's headers, read without decoding the value."""
    value = header(headers, DUE_HEADER)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class DelayedBundle(BaseModel):
    """Several delayed deliveries of one channel in one record (see `delaybundle`)."""

    model_config = ConfigDict(frozen=True, title="DelayedBundle")

    schema_version: Literal[2]
    deliveries: list[DelayedDelivery] = Field(min_length=1)


def parse_delayed_records(value: bytes | None) -> list[DelayedDelivery] | str:
    """The deliveries a delay record carries: one, or a bundle's."""
    try:
        document = orjson.loads(value or b"")
        if isinstance(document, dict) and document.get("schema_version") == BUNDLE_SCHEMA_VERSION:
            return DelayedBundle.model_validate(document).deliveries
        return [DelayedDelivery.model_validate(document)]
    except (orjson.JSONDecodeError, ValidationError) as exc:
        return f"not a delayed delivery: {exc}"[:1000]


class DelaySink(Protocol):
    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        """Queue the record for writing; the result resolves once it is durable."""


class MemoryDelaySink:
    """For unit tests: (topic, delivery) pairs in write order (a bundle's deliveries one by
    one), and each record's raw value, key and headers."""

    def __init__(self) -> None:
        self.written: list[tuple[str, DelayedDelivery]] = []
        self.values: list[bytes] = []
        self.keys: list[bytes | None] = []
        self.headers: list[list[tuple[str, bytes]]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        records = parse_delayed_records(value)
        assert not isinstance(records, str), records
        self.written += [(topic, record) for record in records]
        self.values.append(value)
        self.keys.append(key)
        self.headers.append(headers)
        return ACKNOWLEDGED


class KafkaDelaySink:
    def __init__(self, producer: Any) -> None:
        self._producer = producer

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Awaitable[Any]:
        ack: Awaitable[Any] = await self._producer.send(topic, value, key=key, headers=headers)
        return ack


def headers_for(record: DelayedDelivery, group: str) -> list[tuple[str, bytes]]:
    """What the listener and the redelivery read without decoding the value: when it is due,
    whose it is, for which channel, how old the delivery is and when it goes stale."""
    return _headers(
        record.due_ms, group, record.channel, _ms(record.created_at), _ms(record.expires_at)
    )


def _headers(
    due_ms: int, group: str, channel: str, created_ms: int | None, expires_ms: int | None
) -> list[tuple[str, bytes]]:
    headers = [
        (DUE_HEADER, str(due_ms).encode()),
        (GROUP_HEADER, group.encode()),
        (CHANNEL_HEADER, channel.encode()),
    ]
    if created_ms is not None:
        headers.append((CREATED_HEADER, str(created_ms).encode()))
    if expires_ms is not None:
        headers.append((EXPIRES_HEADER, str(expires_ms).encode()))
    return headers


def _ms(epoch: float | None) -> int | None:
    return None if epoch is None else int(epoch * 1000)


class RawRecord(Protocol):
    """A delay record as read, for writing it back unchanged but for its due time."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class DelayPath:
    """Writes deliveries to their delay topic until durable, then runs `on_written`."""

    def __init__(
        self,
        sink: DelaySink,
        prefix: str,
        levels: Sequence[float],
        group: str = "webhook-consumer",
        handoff: Handoff | None = None,
        on_unwritable: Callable[[Delivery, Outcome], None] | None = None,
    ) -> None:
        self._sink = sink
        self._prefix = prefix
        self._levels = tuple(levels)
        self._group = group
        self._handoff = handoff or Handoff("delay")
        self._on_unwritable = on_unwritable  # typically: dead-letter it
        self._open: dict[tuple[str, str], Bundle] = {}  # (topic, channel) -> taking members

    @property
    def pending(self) -> int:
        return self._handoff.pending

    def submit(
        self,
        delivery: Delivery,
        seconds: float,
        on_written: Callable[[], None],
        *,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
        due_ms: int | None = None,
    ) -> None:
        """`key`: the records of one key share a partition and keep their order (a user's
        ordered deliveries); `headers` are added to the path's own; `due_ms`: the exact due
        time `seconds` stands for, so that records written one after another can be due at
        the very same moment."""
        topic, due_ms = self._place(seconds, due_ms)
        record = DelayedDelivery.of(delivery, due_ms=due_ms)
        value = record.model_dump_json().encode()
        on_written = self._handoff.traced(
            on_written, record.traceparent, record.tracestate, delivery.id, delivery.channel.name
        )
        fallback = None
        if self._on_unwritable is not None:
            give_up = self._on_unwritable

            def fallback(exc: Exception) -> None:
                reason = Outcome(Kind.UNWRITABLE, retryable=False, message=repr(exc)[:500])
                give_up(delivery, reason)

        member = Member(
            value, due_ms, _ms(record.created_at), _ms(record.expires_at), on_written, fallback
        )
        if key is None and not headers:
            # Mostly no key: a delivery has no order to keep with others, so it may share a
            # record, and an unkeyed record is spread over the partitions without hashing.
            self._join(topic, record.channel, member)
            return
        self._write_alone(topic, record.channel, member, key, headers)

    def _join(self, topic: str, channel: str, member: Member) -> None:
        """Into the bundle the writer has not taken yet, or a new one."""
        bundle = self._open.get((topic, channel))
        if bundle is None or not bundle.fits(member):
            bundle = self._open[(topic, channel)] = Bundle()
            self._handoff.submit(
                lambda: self._send_bundle(topic, channel, bundle),
                bundle.written,
                lambda exc: self._split(topic, channel, bundle, exc),
            )
        bundle.add(member)

    def _send_bundle(self, topic: str, channel: str, bundle: Bundle) -> Awaitable[Any]:
        if self._open.get((topic, channel)) is bundle:
            del self._open[(topic, channel)]
        record = bundle.seal()
        headers = _headers(
            record.due_ms, self._group, channel, record.created_ms, record.expires_ms
        )
        return self._sink.send(topic, record.value, None, headers)

    def _split(self, topic: str, channel: str, bundle: Bundle, exc: Exception) -> None:
        """A record too large to write: its deliveries each go alone, so none of them pays
        for having shared it; one alone that cannot be written either gives up as its own."""
        if len(bundle.members) == 1 and bundle.members[0].on_unwritable is not None:
            bundle.members[0].on_unwritable(exc)
            return
        for member in bundle.members:
            self._write_alone(topic, channel, member, None, ())

    def _write_alone(
        self,
        topic: str,
        channel: str,
        member: Member,
        key: bytes | None,
        extra: Sequence[tuple[str, bytes]],
    ) -> None:
        headers = [
            *_headers(member.due_ms, self._group, channel, member.created_ms, member.expires_ms),
            *extra,
        ]
        value = member.value
        self._handoff.submit(
            lambda: self._sink.send(topic, value, key, headers),
            member.on_written,
            member.on_unwritable,
        )

    def rewait(self, record: RawRecord, seconds: float, on_written: Callable[[], None]) -> None:
        """Put a delay record back to wait, its value untouched: a delivery held by an open
        circuit changes nothing but its due time, so it is never decoded or encoded again."""
        topic, due_ms = self._place(seconds)
        value = record.value or b""
        headers = [(k, v) for k, v in record.headers if k != DUE_HEADER]
        headers.insert(0, (DUE_HEADER, str(due_ms).encode()))
        key = record.key  # an ordered delivery keeps its partition, behind its predecessor
        self._handoff.submit(lambda: self._sink.send(topic, value, key, headers), on_written)

    def level(self, seconds: float) -> float:
        """The delay of the topic a wait of `seconds` rides."""
        return level_for(seconds, self._levels)

    def _place(self, seconds: float, due_ms: int | None = None) -> tuple[str, int]:
        level = level_for(seconds, self._levels)
        if due_ms is None or seconds > level:
            due_ms = int((time.time() + min(seconds, level)) * 1000)
        return delay_topic(self._prefix, level), due_ms

    async def close(self) -> None:
        await self._handoff.close()
