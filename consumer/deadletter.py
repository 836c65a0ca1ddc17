"""Dead-letter records and the writer that makes them durable before their offsets move."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from .delivery import Delivery, Source
from .handoff import ACKNOWLEDGED, Handoff
from .outcome import Outcome


class Reason(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    status: int | None = None
    message: str = ""


class SourceRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """`schemas/dead-letter.v1.json`."""

    model_config = ConfigDict(frozen=True, title="DeadLetter")

    schema_version: int = 1
    delivery_id: str | None
    channel: str | None
    campaign_id: str | None
    events: list[Any]
    template_param: dict[str, Any] | None = None
    user_attr: list[dict[str, Any]] | None = None
    reason: Reason
    # Which limit ended a delivery that could still have been retried: "schedule" (every
    # scheduled attempt was made) or "max_age"; null for a permanent failure.
    limit: str | None = None
    attempts: int
    rounds: int = 0  # delays of the retry schedule used
    # The letter was too large to write whole: `events` and `user_attr` were dropped, and
    # `sources` says where the original records are. Replay refuses such letters.
    truncated: bool = False
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    dead_lettered_at: datetime
    source: SourceRef
    sources: list[SourceRef]
    # W3C trace context of the first record (our span for it), so a replay continues its trace.
    traceparent: str | None = None
    tracestate: str | None = None

    def encode(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _ref(source: Source) -> SourceRef:
    return SourceRef(topic=source.topic, partition=source.partition, offset=source.offset)


def for_delivery(delivery: Delivery, reason: Outcome, limit: str | None = None) -> DeadLetter:
    refs = [_ref(s) for s in delivery.sources]
    return DeadLetter(
        delivery_id=delivery.id,
        channel=delivery.channel.name,
        campaign_id=delivery.campaign_id,
        events=delivery.events,
        template_param=dict(delivery.template_param),
        user_attr=delivery.user_attr,
        reason=Reason(kind=reason.kind.value, status=reason.status, message=reason.message),
        limit=limit,
        attempts=delivery.attempts,
        rounds=delivery.rounds,
        first_attempt_at=_time(delivery.first_attempt_at),
        last_attempt_at=_time(delivery.last_attempt_at),
        dead_lettered_at=datetime.now(UTC),
        source=refs[0],
        sources=refs,
        traceparent=None if delivery.trace is None else delivery.trace.traceparent,
        tracestate=None if delivery.trace is None else delivery.trace.state,
    )


def for_record(
    source: Source,
    value: bytes | None,
    document: Any | None,
    reason: Outcome,
    campaign_id: str | None = None,
) -> DeadLetter:
    """A record that never became a delivery: kept whole, as JSON if it was JSON."""
    event: Any
    if document is not None:
        event = document
    elif value is None:
        event = None
    else:
        try:
            event = value.decode("utf-8")
        except UnicodeDecodeError:
            event = {"base64": base64.b64encode(value).decode("ascii")}
    ref = _ref(source)
    return DeadLetter(
        delivery_id=None,
        channel=None,
        campaign_id=campaign_id,
        events=[event],
        reason=Reason(kind=reason.kind.value, status=reason.status, message=reason.message),
        attempts=0,
        first_attempt_at=None,
        last_attempt_at=None,
        dead_lettered_at=datetime.now(UTC),
        source=ref,
        sources=[ref],
    )


class DeadLetterSink(Protocol):
    async def send(self, letter: DeadLetter) -> Awaitable[Any]:
        """Queue the letter for writing; the result resolves once it is durable."""


class MemoryDeadLetterSink:
    """For unit tests."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, letter: DeadLetter) -> Awaitable[Any]:
        self.letters.append(letter)
        return ACKNOWLEDGED


class KafkaDeadLetterSink:
    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, letter: DeadLetter) -> Awaitable[Any]:
        headers = [
            ("reason", letter.reason.kind.encode()),
            ("channel", (letter.channel or "").encode()),
        ]
        key = (letter.delivery_id or f"{letter.source.topic}:{letter.source.partition}").encode()
        ack: Awaitable[Any] = await self._producer.send(
            self._topic, letter.encode(), key=key, headers=headers
        )
        return ack


class DeadLetterWriter:
    """Writes letters in the background until durable, then runs `on_written`."""

    def __init__(self, sink: DeadLetterSink, handoff: Handoff | None = None) -> None:
        self._sink = sink
        self._handoff = handoff or Handoff("dead letter")

    @property
    def pending(self) -> int:
        return self._handoff.pending

    def submit(
        self, letter: DeadLetter, on_written: Callable[[], None], reducible: bool = True
    ) -> None:
        def reduced(exc: Exception) -> None:
            # Too large even for the dead-letter topic (a big batch): keep where the records
            # are, drop their bodies, so the offsets can move and the events can be found.
            note = f"{len(letter.events)} event(s) omitted: the letter was too large ({exc!r})"
            smaller = letter.model_copy(
                update={"events": [{"omitted": note[:500]}], "user_attr": None, "truncated": True}
            )
            self.submit(smaller, on_written, reducible=False)

        written = self._handoff.traced(
            on_written, letter.traceparent, letter.tracestate, letter.delivery_id, letter.channel
        )
        self._handoff.submit(
            lambda: self._sink.send(letter), written, reduced if reducible else None
        )

    async def close(self) -> None:
        await self._handoff.close()
