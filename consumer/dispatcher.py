"""Turns records into deliveries: parse, route to the campaign's channels, attach attributes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .attributes import AttributeStore
from .batcher import Batcher
from .catalog import Catalog, Route
from .deadletter import DeadLetterWriter, for_record
from .delivery import Delivery, Source, Ticket, delivery_id
from .events import Event, Rejected, parse_event
from .outcome import Kind, Outcome


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


class Lanes(Protocol):
    def submit(self, delivery: Delivery) -> None: ...


class Dispatcher:
    def __init__(
        self,
        catalog: Catalog,
        attributes: AttributeStore,
        lanes: Mapping[str, Lanes],
        dead_letters: DeadLetterWriter,
    ) -> None:
        self._catalog = catalog
        self._attributes = attributes
        self._lanes = lanes
        self._dead_letters = dead_letters
        self._batchers = {
            name: Batcher(lanes[name].submit)
            for name, channel in catalog.channels.items()
            if channel.batched
        }

    async def dispatch(
        self, records: Sequence[RecordLike], on_finished: Callable[[Source], None]
    ) -> None:
        """Hand every record on without waiting for its deliveries; `on_finished` fires per
        record once all its deliveries reached a terminal hand-off."""
        parsed = [(r, parse_event(r.value)) for r in records]
        users = {
            e.user_id
            for _, e in parsed
            if isinstance(e, Event) and e.campaign_id in self._catalog.routes
        }
        # One lookup for the whole batch: many users per query.
        found = await self._attributes.get_many(users) if users else {}
        for record, event in parsed:
            source = Source(record.topic, record.partition, record.offset)
            if isinstance(event, Rejected):
                reason = Outcome(Kind.INVALID_EVENT, retryable=False, message=event.message)
                self._reject(source, record.value, event.document, reason, on_finished)
                continue
            routes = self._catalog.routes.get(event.campaign_id)
            if routes is None:
                reason = Outcome(
                    Kind.UNKNOWN_CAMPAIGN,
                    retryable=False,
                    message=f"no campaign {event.campaign_id!r} is configured",
                )
                self._reject(
                    source, record.value, event.document, reason, on_finished, event.campaign_id
                )
                continue
            ticket = Ticket(source, len(routes), on_finished)
            attributes = found.get(event.user_id)
            for route in routes:
                self._route(route, event, attributes, source, ticket)

    def _route(
        self,
        route: Route,
        event: Event,
        attributes: dict[str, Any] | None,
        source: Source,
        ticket: Ticket,
    ) -> None:
        channel = route.channel
        selected = (
            None
            if attributes is None
            else {key: attributes[key] for key in channel.user_attributes if key in attributes}
        )
        batcher = self._batchers.get(channel.name)
        if batcher is not None:
            batcher.add(
                route, event.campaign_id, event.event_id, event.document, selected, source, ticket
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
            )
        )

    def _reject(
        self,
        source: Source,
        value: bytes | None,
        document: Any,
        reason: Outcome,
        on_finished: Callable[[Source], None],
        campaign_id: str | None = None,
    ) -> None:
        ticket = Ticket(source, 1, on_finished)
        letter = for_record(source, value, document, reason, campaign_id)
        self._dead_letters.submit(letter, ticket.done)

    def flush(self) -> None:
        """Send every lingering batch now (on shutdown and revoke)."""
        for batcher in self._batchers.values():
            batcher.flush_all()
