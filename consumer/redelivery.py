"""Records of the delay topics back into deliveries, handed to their channel's lane."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from .catalog import Catalog
from .deadletter import DeadLetter, DeadLetterWriter, Reason, SourceRef, for_record
from .delaypath import (
    CHANNEL_HEADER,
    CREATED_HEADER,
    EXPIRES_HEADER,
    GROUP_HEADER,
    DelayedDelivery,
    DelayPath,
    header,
    parse_delayed_records,
)
from .delivery import Owner, Source, Ticket
from .dispatcher import Lanes, RecordLike
from .observer import NO_OBSERVER, GaveUp, Held, Observer, Redelivered, Skipped
from .orderledger import ORDER_SEEN, OrderLedger, Seq
from .outcome import Kind, Outcome
from .sequencer import place_in

_LEDGER_LAG_SECONDS = 1.0  # how long a record waits for this process's order ledger to read on


class Redelivery:
    def __init__(
        self,
        catalog: Catalog,
        lanes: Mapping[str, Lanes],
        dead_letters: DeadLetterWriter,
        delays: DelayPath,
        group: str,
        max_age: float,
        observer: Observer = NO_OBSERVER,
        ledger: OrderLedger | None = None,
    ) -> None:
        self._catalog = catalog
        self._lanes = lanes
        self._dead_letters = dead_letters
        self._delays = delays
        self._group = group.encode()
        self._max_age_ms = max_age * 1000
        self._observer = observer
        self._ledger = ledger  # present when a channel keeps its users' order

    def use(self, catalog: Catalog) -> None:
        """A reloaded config: delay records come back to the channels as configured now."""
        self._catalog = catalog

    async def dispatch(self, records: Sequence[RecordLike], owner: Owner) -> None:
        for record in records:
            source = Source(record.topic, record.partition, record.offset)
            ticket = Ticket(source, 1, owner)
            group = header(record.headers, GROUP_HEADER)
            if group is not None and group != self._group:
                # Another deployment's record on a topic it shares with us by configuration:
                # not ours to send or to dead-letter.
                self._observer.emit(Skipped(record.topic, group.decode("utf-8", "replace")))
                ticket.done()
                continue
            if self._held(record, ticket) or self._unseen(record, ticket):
                continue
            carried = parse_delayed_records(record.value)
            if isinstance(carried, str):
                reason = Outcome(Kind.INVALID_EVENT, retryable=False, message=carried)
                self._give_up(for_record(source, record.value, None, reason), reason, ticket)
                continue
            ticket.remaining = len(carried)  # a bundle's record is done with its last delivery
            for delayed in carried:
                self._send_again(delayed, source, ticket)

    def _send_again(self, delayed: DelayedDelivery, source: Source, ticket: Ticket) -> None:
        delivery = delayed.to_delivery(self._catalog)
        if delivery is None:
            reason = Outcome(
                Kind.UNKNOWN_CHANNEL,
                retryable=False,
                message=f"channel {delayed.channel!r} is no longer configured",
            )
            letter = _letter_for(delayed, reason, source)
            self._give_up(letter, reason, ticket, delayed.channel, self._erasing(delayed))
            return
        delivery.tickets.append(ticket)
        self._observer.emit(Redelivered(delivery))
        self._lanes[delivery.channel.name].submit(delivery)

    def _held(self, record: RecordLike, ticket: Ticket) -> bool:
        """Back while its channel's circuit is still open: wait again for the next probe,
        as the bytes it came in (a long outage rewrites many records many times). Not an
        ordered delivery: its lane sends it back with the rest of its user's chain, and
        says in the order ledger when they are due, so later ones can wait beside them."""
        if header(record.headers, ORDER_SEEN) is not None:
            return False
        channel = (header(record.headers, CHANNEL_HEADER) or b"").decode("utf-8", "replace")
        created = header(record.headers, CREATED_HEADER)
        lane = self._lanes.get(channel)
        if lane is None or created is None or not created.isdigit():
            return False
        now_ms = time.time() * 1000
        if now_ms - int(created) >= self._max_age_ms:
            return False  # too old: decoded, so its dead letter says everything
        expires = header(record.headers, EXPIRES_HEADER)
        if expires is not None and expires.isdigit() and now_ms >= int(expires):
            return False  # stale: decoded, and its lane dead-letters it
        hold = lane.hold_for()
        if hold is None:
            return False
        self._observer.emit(Held(channel, hold))
        self._delays.rewait(record, hold, ticket.done)
        return True

    def _unseen(self, record: RecordLike, ticket: Ticket) -> bool:
        """An ordered delivery whose writer knew of order facts this process has not read
        yet (its follower lags): back to wait a moment, rather than overtake one of them."""
        seen = header(record.headers, ORDER_SEEN)
        if seen is None or not seen.isdigit() or self._ledger is None:
            return False
        if self._ledger.caught_up(int(seen)):
            return False
        self._delays.rewait(record, _LEDGER_LAG_SECONDS, ticket.done)
        return True

    def _give_up(
        self,
        letter: DeadLetter,
        reason: Outcome,
        ticket: Ticket,
        channel: str | None = None,
        erase: tuple[str, str, Seq] | None = None,
    ) -> None:
        self._observer.emit(GaveUp(channel, None, reason, None))
        ledger = self._ledger
        if ledger is None or erase is None:
            self._dead_letters.submit(letter, ticket.done)
        else:  # its order fact goes with it, or the channel's users would wait for it
            self._dead_letters.submit(letter, lambda: ledger.erase(*erase, ticket.done))

    def _erasing(self, delayed: DelayedDelivery) -> tuple[str, str, Seq] | None:
        """The order fact of a delivery that ends here, if this process's view has one."""
        place = place_in(delayed.events, delayed.sources)
        if self._ledger is None or place is None:
            return None
        user, seq = place
        return (
            (delayed.channel, user, seq)
            if seq in self._ledger.channel(delayed.channel).get(user, ())
            else None
        )

    def flush(self) -> None:
        """Nothing lingers here; present so every handler can be flushed alike."""


def _letter_for(delayed: DelayedDelivery, reason: Outcome, at: Source) -> DeadLetter:
    """A delivery whose channel is gone, kept whole under its channel's name: `dlq replay`
    sends it again once a channel of that name is configured."""
    return DeadLetter(
        delivery_id=delayed.delivery_id,
        channel=delayed.channel,
        campaign_id=delayed.campaign_id,
        events=delayed.events,
        template_param=delayed.template_param,
        user_attr=delayed.user_attr,
        reason=Reason(kind=reason.kind.value, status=None, message=reason.message),
        attempts=delayed.attempts,
        rounds=delayed.rounds,
        first_attempt_at=_time(delayed.first_attempt_at),
        last_attempt_at=_time(delayed.last_attempt_at),
        dead_lettered_at=datetime.now(UTC),
        source=delayed.sources[0] if delayed.sources else _ref(at),
        sources=delayed.sources or [_ref(at)],
    )


def _ref(source: Source) -> SourceRef:
    return SourceRef(topic=source.topic, partition=source.partition, offset=source.offset)


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)
