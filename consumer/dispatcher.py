"""Turns records into deliveries: parse, route to the campaign's channels, attach attributes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from .attributes import AttributeStore
from .batcher import Batcher
from .catalog import Catalog, Route
from .deadletter import DeadLetterWriter, for_record
from .delivery import Delivery, Owner, Source, Ticket, delivery_id
from .events import Event, Rejected, parse_event
from .observer import NO_OBSERVER, GaveUp, Observer, OccurredInFuture, RecordsTraced
from .outcome import Kind, Outcome, deadline, expired
from .tracecontext import TraceContext, from_headers

log = structlog.get_logger(__name__)

# An attribute store that fails is asked again this many times, backing off, before the
# records of the batch are dead-lettered (reason attributes_unavailable, replayable).
LOOKUP_ATTEMPTS = 5
# An occurred_at further ahead of our clock than this is counted as clock skew (any time ahead
# counts as now for expiry).
FAR_FUTURE_SECONDS = 60.0
# A record with this header (`dlq replay --ignore-expiry` writes it) is sent however stale.
EXPIRY_HEADER, IGNORE_EXPIRY = "expiry", b"ignore"


class RecordLike(Protocol):
    """The part of a Kafka record the dispatcher reads (aiokafka's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def key(self) -> bytes | None: ...


class Lanes(Protocol):
    def submit(self, delivery: Delivery) -> None: ...

    def hold_for(self) -> float | None:
        """How long a delivery arriving now would wait for its circuit's probe; None when it
        may be sent."""


class Dispatcher:
    def __init__(
        self,
        catalog: Catalog,
        attributes: AttributeStore,
        lanes: Mapping[str, Lanes],
        dead_letters: DeadLetterWriter,
        observer: Observer = NO_OBSERVER,
        lookup_backoff: float = 0.2,
    ) -> None:
        self._catalog = catalog
        self._attributes = attributes
        self._lanes = lanes
        self._dead_letters = dead_letters
        self._observer = observer
        self._lookup_backoff = lookup_backoff
        self._store_failing = False
        self._batchers = self._batchers_for(catalog)

    def _batchers_for(self, catalog: Catalog) -> dict[str, Batcher]:
        return {
            name: Batcher(self._lanes[name].submit)
            for name, channel in catalog.channels.items()
            if channel.batched
        }

    def use(self, catalog: Catalog) -> None:
        """A reloaded config: lingering batches go out as they were formed, new records are
        routed by the new campaigns (the lanes mapping is shared and already updated)."""
        self.flush()
        self._catalog = catalog
        self._batchers = self._batchers_for(catalog)

    async def dispatch(self, records: Sequence[RecordLike], owner: Owner) -> None:
        """Hand every record on without waiting for its deliveries; `owner` hears of each
        record once all its deliveries reached a terminal hand-off."""
        spans = self._observer.spans
        started = time.time_ns() if spans else 0
        parsed = [(r, parse_event(r.value)) for r in records]
        users = {
            e.user_id
            for _, e in parsed
            if isinstance(e, Event) and e.campaign_id in self._catalog.routes
        }
        # One lookup for the whole batch: many users per query.
        found: dict[str, dict[str, Any]] | None = {}
        lookup_ns = None
        if users:
            asked = time.time_ns() if spans else 0
            found = await self._lookup(users)
            lookup_ns = (asked, time.time_ns()) if spans else None
        traced: list[tuple[TraceContext, Source]] = []
        now = time.time()
        for record, event in parsed:
            source = Source(record.topic, record.partition, record.offset)
            if isinstance(event, Rejected):
                reason = Outcome(Kind.INVALID_EVENT, retryable=False, message=event.message)
                self._reject(source, record.value, event.document, reason, owner)
                continue
            routes = self._catalog.routes.get(event.campaign_id)
            if routes is None:
                reason = Outcome(
                    Kind.UNKNOWN_CAMPAIGN,
                    retryable=False,
                    message=f"no campaign {event.campaign_id!r} is configured",
                )
                self._reject(source, record.value, event.document, reason, owner, event.campaign_id)
                continue
            if found is None:
                reason = Outcome(
                    Kind.ATTRIBUTES_UNAVAILABLE,
                    retryable=False,
                    message="the attribute store did not answer; replay this letter when it does",
                )
                self._reject(source, record.value, event.document, reason, owner, event.campaign_id)
                continue
            ticket = Ticket(source, len(routes), owner)
            attributes = found.get(event.user_id)
            if event.occurred_at - now > FAR_FUTURE_SECONDS:
                self._observer.emit(OccurredInFuture(event.occurred_at - now))
            trace = from_headers(record.headers) if record.headers else None
            if trace is not None and spans:
                traced.append((trace, source))
            ignore_expiry = (EXPIRY_HEADER, IGNORE_EXPIRY) in record.headers
            for route in routes:
                limit = None if ignore_expiry else route.expire_after
                expires_at = deadline(event.occurred_at, limit, now)
                self._route(route, event, attributes, source, ticket, trace, expires_at, now)
        if traced:
            self._observer.emit(RecordsTraced(tuple(traced), started, time.time_ns(), lookup_ns))

    async def _lookup(self, users: Iterable[str]) -> dict[str, dict[str, Any]] | None:
        """The users' attributes, or None when the store keeps failing. Any exception counts
        as a failure: the store is outside our control, and it must never end the process."""
        wanted = list(users)
        error: Exception | None = None
        for attempt in range(LOOKUP_ATTEMPTS):
            if attempt:
                await asyncio.sleep(self._lookup_backoff * 2 ** (attempt - 1))
            try:
                found = await self._attributes.get_many(wanted)
            except Exception as exc:
                error = exc
                continue
            if self._store_failing:
                self._store_failing = False
                log.info("attributes.recovered")
            return found
        if not self._store_failing:
            self._store_failing = True  # said once per outage, not once per batch
            log.warning("attributes.unavailable", error=repr(error)[:300], users=len(wanted))
        return None

    def _route(
        self,
        route: Route,
        event: Event,
        attributes: dict[str, Any] | None,
        source: Source,
        ticket: Ticket,
        trace: TraceContext | None,
        expires_at: float | None,
        now: float,
    ) -> None:
        channel = route.channel
        selected = (
            None
            if attributes is None
            else {key: attributes[key] for key in channel.user_attributes if key in attributes}
        )
        batcher = self._batchers.get(channel.name)
        # A stale event joins no batch (it would take the fresh ones down with it): alone,
        # its lane dead-letters it at once.
        if batcher is not None and expired(expires_at, now) is None:
            batcher.add(
                route,
                event.campaign_id,
                event.event_id,
                event.document,
                selected,
                source,
                ticket,
                trace,
                expires_at,
            )
            return
        self._lanes[channel.name].submit(
            Delivery(
                id=delivery_id(channel.name, [event.event_id]),
                channel=channel,
                campaign_id=event.campaign_id,
                template_param=route.template_param,
                user_attr=[] if selected is None else [selected],
                events=[event.document],
                sources=[source],
                tickets=[ticket],
                trace=trace,
                expires_at=expires_at,
            )
        )

    def _reject(
        self,
        source: Source,
        value: bytes | None,
        document: Any,
        reason: Outcome,
        owner: Owner,
        campaign_id: str | None = None,
    ) -> None:
        ticket = Ticket(source, 1, owner)
        self._observer.emit(GaveUp(None, None, reason, None))
        letter = for_record(source, value, document, reason, campaign_id)
        self._dead_letters.submit(letter, ticket.done)

    def flush(self) -> None:
        """Send every lingering batch now (on shutdown and revoke)."""
        for batcher in self._batchers.values():
            batcher.flush_all()
