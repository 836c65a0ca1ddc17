"""What a lane asks before and after it sends: may this delivery go now, and what follows
when it ends. `Unordered` lets everything go; `ordering.UserOrder` keeps each user's order.

A delivery's place for ordering is its event's user and input position (partition, offset),
which it keeps through retries, delay topics and replays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .delaypath import DelayPath
from .delivery import Delivery
from .orderledger import OrderLedger, Seq


class Sequencer(Protocol):
    """What a lane asks about the order of its deliveries."""

    def admit(self, delivery: Delivery) -> bool:
        """True: send it now. False: it waits (held here, or sent behind on the delay path)."""

    def settled(self, delivery: Delivery) -> Delivery | None:
        """It ended (delivered, or its dead letter durable): finish it; the next to send."""

    def delay(self, delivery: Delivery, seconds: float) -> None:
        """Hand it to the delay path, finishing it once that is durable."""

    def dropped(self, delivery: Delivery) -> Delivery | None:
        """Not sent, and left unfinished (its partition moved away): the next to send."""

    def release_all(self) -> list[Delivery]:
        """Give up everything held back (the channel is being removed)."""


class Unordered:
    """A channel without ordering: every delivery goes at once. With a ledger (the
    deployment keeps some channel's order, or did), a delivery that still has an order fact
    from when its channel kept order erases it as it ends: a channel that gets its order
    back later must not find users held back by facts nobody would ever erase."""

    def __init__(
        self, delays: DelayPath, ledger: OrderLedger | None = None, channel: str = ""
    ) -> None:
        self._delays = delays
        self._ledger = ledger
        self._channel = channel
        self._facts = None if ledger is None else ledger.channel(channel)

    def admit(self, delivery: Delivery) -> bool:
        return True

    def settled(self, delivery: Delivery) -> Delivery | None:
        if self._ledger is None or not self._facts:
            delivery.finish()
        else:
            end(self._ledger, self._channel, delivery, place_of(delivery))
        return None

    def delay(self, delivery: Delivery, seconds: float) -> None:
        self._delays.submit(delivery, seconds, delivery.finish)

    def dropped(self, delivery: Delivery) -> Delivery | None:
        return None

    def release_all(self) -> list[Delivery]:
        return []


def end(
    ledger: OrderLedger, channel: str, delivery: Delivery, place: tuple[str, Seq] | None
) -> None:
    """Finish a delivery that ended (delivered or dead-lettered), erasing its fact first if
    it has one. Finished only once the erasure is durable: a crash before it redoes the
    delivery (a duplicate, never an overtaking), and the redo erases it again."""
    if place is not None and place[1] in ledger.channel(channel).get(place[0], ()):
        ledger.erase(channel, place[0], place[1], delivery.finish)
    else:
        delivery.finish()


def place_of(delivery: Delivery) -> tuple[str, Seq] | None:
    """(user, input position); None for what has no single user (it then goes unordered)."""
    return place_in(delivery.events, delivery.sources)


class _Position(Protocol):
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def place_in(events: Sequence[Any], sources: Sequence[_Position]) -> tuple[str, Seq] | None:
    """The same, from a delivery's events and sources however they are held."""
    if len(events) != 1 or not sources:
        return None
    event = events[0]
    user = event.get("user_id") if isinstance(event, dict) else None
    if not isinstance(user, str):
        return None
    source = sources[0]
    return user, (source.partition, source.offset)
