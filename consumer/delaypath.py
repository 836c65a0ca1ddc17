"""The delay path: deliveries parked on Kafka delay topics until due, then tried again.

One topic per distinct delay of the schedule (plus the parking delay). Every record of a delay
topic waits about as long as its neighbours, so due times grow along a partition and the
listener only has to look at the head: a record not yet due pauses its partition until it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from .catalog import Catalog
from .config import ServiceConfig
from .deadletter import Reason, SourceRef
from .delivery import Delivery, Source
from .handoff import Handoff
from .outcome import Delay, Kind, Outcome

DUE_HEADER = "due-ms"


def delay_topic(prefix: str, seconds: float) -> str:
    label = f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"
    return f"{prefix}-{label}"


def delay_topics(config: ServiceConfig) -> list[str]:
    delays = {*config.retry.schedule_seconds, config.retry.park_seconds}
    return sorted({delay_topic(config.kafka.retry_topic_prefix, d) for d in delays})


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
    first_attempt_at: float | None
    last_attempt_at: float | None
    last_error: Reason | None
    due_ms: int

    @classmethod
    def of(cls, delivery: Delivery, due_ms: int) -> DelayedDelivery:
        # Built from our own validated objects: skip re-validation, it is on the hot path when
        # a receiver fails and thousands of deliveries move to the delay path at once.
        error = delivery.last_error
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
            first_attempt_at=delivery.first_attempt_at,
            last_attempt_at=delivery.last_attempt_at,
            last_error=None
            if error is None
            else Reason.model_construct(
                kind=error.kind.value, status=error.status, message=error.message
            ),
            due_ms=due_ms,
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
        )


def due_ms_of(headers: Iterable[tuple[str, bytes]] | None) -> int | None:
    """The due time from a record's headers, read without decoding the value."""
    for key, value in headers or ():
        if key == DUE_HEADER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def parse_delayed(value: bytes | None) -> DelayedDelivery | str:
    try:
        return DelayedDelivery.model_validate(orjson.loads(value or b""))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        return f"not a delayed delivery: {exc}"[:1000]


class DelaySink(Protocol):
    async def write(self, topic: str, record: DelayedDelivery) -> None:
        """Return only once the record is durable."""


class MemoryDelaySink:
    """For unit tests: (topic, record) pairs in write order."""

    def __init__(self) -> None:
        self.written: list[tuple[str, DelayedDelivery]] = []

    async def write(self, topic: str, record: DelayedDelivery) -> None:
        self.written.append((topic, record))


class KafkaDelaySink:
    def __init__(self, producer: Any) -> None:
        self._producer = producer

    async def write(self, topic: str, record: DelayedDelivery) -> None:
        headers = [(DUE_HEADER, str(record.due_ms).encode()), ("channel", record.channel.encode())]
        await self._producer.send_and_wait(
            topic,
            record.model_dump_json().encode(),
            key=record.delivery_id.encode(),
            headers=headers,
        )


class DelayPath:
    """Writes deliveries to their delay topic until durable, then runs `on_written`."""

    def __init__(
        self,
        sink: DelaySink,
        prefix: str,
        handoff: Handoff | None = None,
        on_unwritable: Callable[[Delivery, Outcome], None] | None = None,
    ) -> None:
        self._sink = sink
        self._prefix = prefix
        self._handoff = handoff or Handoff()
        self._on_unwritable = on_unwritable  # typically: dead-letter it

    def submit(self, delivery: Delivery, delay: Delay, on_written: Callable[[], None]) -> None:
        record = DelayedDelivery.of(delivery, due_ms=int((time.time() + delay.seconds) * 1000))
        topic = delay_topic(self._prefix, delay.level)
        fallback = None
        if self._on_unwritable is not None:
            give_up = self._on_unwritable

            def fallback(exc: Exception) -> None:
                reason = Outcome(Kind.UNWRITABLE, retryable=False, message=repr(exc)[:500])
                give_up(delivery, reason)

        self._handoff.submit(lambda: self._sink.write(topic, record), on_written, "delay", fallback)

    async def close(self) -> None:
        await self._handoff.close()
