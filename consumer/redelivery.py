"""Records of the delay topics back into deliveries, handed to their channel's lane."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import orjson

from .catalog import Catalog
from .deadletter import DeadLetterWriter, for_record
from .delaypath import parse_delayed
from .delivery import Source, Ticket
from .dispatcher import Lanes, RecordLike
from .outcome import Kind, Outcome


class Redelivery:
    def __init__(
        self, catalog: Catalog, lanes: Mapping[str, Lanes], dead_letters: DeadLetterWriter
    ) -> None:
        self._catalog = catalog
        self._lanes = lanes
        self._dead_letters = dead_letters

    async def dispatch(
        self, records: Sequence[RecordLike], on_finished: Callable[[Source], None]
    ) -> None:
        for record in records:
            source = Source(record.topic, record.partition, record.offset)
            ticket = Ticket(source, 1, on_finished)
            delayed = parse_delayed(record.value)
            if isinstance(delayed, str):
                reason = Outcome(Kind.INVALID_EVENT, retryable=False, message=delayed)
                letter = for_record(source, record.value, None, reason)
                self._dead_letters.submit(letter, ticket.done)
                continue
            delivery = delayed.to_delivery(self._catalog)
            if delivery is None:
                reason = Outcome(
                    Kind.UNKNOWN_CHANNEL,
                    retryable=False,
                    message=f"channel {delayed.channel!r} is no longer configured",
                )
                document = orjson.loads(delayed.model_dump_json())
                letter = for_record(source, record.value, document, reason, delayed.campaign_id)
                self._dead_letters.submit(letter, ticket.done)
                continue
            delivery.tickets.append(ticket)
            self._lanes[delivery.channel.name].submit(delivery)

    def flush(self) -> None:
        """Nothing lingers here; present so every handler can be flushed alike."""
