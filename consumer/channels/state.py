"""What every replica knows about the channels, as the channel-state topic says it.

Lanes ask `disabled(name)` before each request; a 410 answer calls `gone`, which disables the
channel here at once and publishes the record for every other replica (and for the next start).
Records are applied in the topic's order, so all replicas end in the same state; a change made
here holds until its own record is read back, so an older record still on its way cannot undo it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from consumer.observer import NO_OBSERVER, ChannelStateChanged, Observer
from consumer.outcome import GONE, Outcome

from .records import RECEIVER, ChannelRecord, RecordKind


@dataclass(frozen=True, slots=True)
class Disabled:
    """Why a channel is not sent to."""

    by: str
    reason: str
    at: datetime
    status: int | None = None

    def describe(self) -> str:
        return f"channel disabled by {self.by} at {self.at.isoformat(timespec='seconds')}: " + (
            self.reason or "no reason given"
        )


class ChannelControl(Protocol):
    """What a lane asks and tells about its channel."""

    def disabled(self, channel: str) -> Disabled | None:
        """Why the channel is disabled; None when it may be sent to."""

    def gone(self, channel: str, answer: Outcome) -> None:
        """The receiver answered 410 Gone: disable the channel for the whole deployment."""


class ChannelState:
    """The view of the channel-state topic that lanes, the status page and `channels list`
    read. `publish` writes a record to the topic (None: this view only reads); `on_reset` is
    told of a `reset-circuit` read after the start (older ones are history, not requests)."""

    def __init__(
        self,
        observer: Observer = NO_OBSERVER,
        publish: Callable[[ChannelRecord], None] | None = None,
        on_reset: Callable[[str], None] | None = None,
    ) -> None:
        self._observer = observer
        self._publish = publish
        self._on_reset = on_reset
        self._effective: dict[str, Disabled] = {}
        self._topic: dict[str, ChannelRecord] = {}  # the latest state record per channel
        self._own: dict[str, ChannelRecord] = {}  # written here, not read back yet
        self._live = False  # the topic was read to its end once
        self.circuits: dict[str, ChannelRecord] = {}  # by key: each replica's last change
        self.resets: dict[str, ChannelRecord] = {}  # by channel

    def disabled(self, channel: str) -> Disabled | None:
        return self._effective.get(channel)

    def state_of(self, channel: str) -> ChannelRecord | None:
        """The channel's latest state record (enabled ones too), for `channels list`."""
        return self._own.get(channel) or self._topic.get(channel)

    def known_channels(self) -> list[str]:
        """Every channel with a state record, in name order."""
        return sorted(self._topic.keys() | self._own.keys())

    def gone(self, channel: str, answer: Outcome) -> None:
        if channel in self._effective:
            return  # said once: every request still in flight may answer 410 too
        why = f"the receiver answered 410 Gone: {answer.message}"[:500]
        self.write(
            ChannelRecord(
                kind=RecordKind.STATE, channel=channel, by=RECEIVER, disabled=True, reason=why,
                status=GONE,
            )
        )  # fmt: skip

    def write(self, record: ChannelRecord) -> None:
        """Take a change made here at once, and publish it."""
        if record.kind is RecordKind.STATE:
            self._own[record.channel] = record
            self._settle(record.channel)
        if self._publish is not None:
            self._publish(record)

    def apply(self, key: str, record: ChannelRecord | None) -> None:
        """A record read from the topic, in the topic's order (None: a tombstone of `key`)."""
        if record is None:
            self.circuits.pop(key, None)
            return
        match record.kind:
            case RecordKind.STATE:
                self._topic[record.channel] = record
                own = self._own.get(record.channel)
                if own is not None and own.id == record.id:
                    del self._own[record.channel]  # read back: the topic's order rules again
                self._settle(record.channel)
            case RecordKind.CIRCUIT_RESET:
                self.resets[record.channel] = record
                if self._live and self._on_reset is not None:
                    self._on_reset(record.channel)
            case RecordKind.CIRCUIT:
                self.circuits[key] = record

    def caught_up(self) -> None:
        """The topic was read to its end: reset requests from now on are acted upon."""
        self._live = True

    def _settle(self, channel: str) -> None:
        record = self.state_of(channel)
        now = None
        if record is not None and record.disabled:
            now = Disabled(record.by, record.reason, record.at, record.status)
        before = self._effective.get(channel)
        if now == before:
            return
        if now is None:
            del self._effective[channel]
        else:
            self._effective[channel] = now
        if record is not None:
            self._observer.emit(
                ChannelStateChanged(
                    channel,
                    now is not None,
                    record.by,
                    record.reason,
                    record.at.timestamp(),
                    record.status,
                )
            )
