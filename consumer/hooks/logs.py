"""The observer's transitions as log lines.

`TransitionLog` writes what an operator must always see (a circuit opening, hand-offs failing
and recovering) and, at debug level only, one line per transition of a delivery with its ids.
`RetrySummary` adds up the retry path and says it at info level every few seconds, so a
failing receiver costs one line per interval, not one per delivery.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import structlog

from ..delivery import Delivery
from ..observer import (
    DETAILS_TYPES,
    Attempted,
    AttributesCorrupt,
    ChannelStateChanged,
    CircuitChanged,
    Delayed,
    Delivered,
    Details,
    Dropped,
    GaveUp,
    Handler,
    HandoffChanged,
    Held,
    Redelivered,
    RetryingSoon,
    Skipped,
)

log = structlog.get_logger("consumer.retry")

_ALWAYS_LOGGED = (CircuitChanged, HandoffChanged, ChannelStateChanged, AttributesCorrupt)


def _ids(delivery: Delivery) -> dict[str, Any]:
    event_ids = delivery.event_ids()
    return {
        "delivery_id": delivery.id,
        "channel": delivery.channel.name,
        "event_id": event_ids[0] if len(event_ids) == 1 else event_ids,
        "attempt": delivery.attempts,
        "round": delivery.rounds,
    }


class TransitionLog:
    def __init__(self, debug: bool) -> None:
        self._debug = debug  # decided once: building per-delivery lines costs even when dropped
        # Below debug level, the transitions of every delivery never reach this hook.
        heard = DETAILS_TYPES if debug else _ALWAYS_LOGGED
        self.subscriptions: dict[type, Handler] = dict.fromkeys(heard, self)

    def __call__(self, details: Details) -> None:
        match details:
            case CircuitChanged(channel, state, failures, cooldown):
                log.warning(
                    f"circuit.{state}", channel=channel, failures=failures, cooldown=cooldown
                )
            case HandoffChanged(what, True, _, error):
                log.warning("handoff.failing", what=what, error=error)
            case HandoffChanged(what, False, failed, _):
                log.info("handoff.recovered", what=what, failed_tries=failed)
            case ChannelStateChanged():
                self._channel_state(details)
            case AttributesCorrupt(key, reason, True):  # once per user: it stays corrupt
                log.warning("attributes.corrupt", key=key, reason=reason, sent_as="not found")
            case _ if self._debug:
                self._debug_line(details)

    @staticmethod
    def _channel_state(changed: ChannelStateChanged) -> None:
        fields = {"channel": changed.channel, "by": changed.by, "reason": changed.reason}
        if changed.disabled:
            log.warning("channel.disabled", **fields, status=changed.status)
        else:
            log.info("channel.enabled", **fields)

    def _debug_line(self, details: Details) -> None:
        match details:
            case Attempted(delivery, outcome, seconds, waited):
                log.debug(
                    "delivery.attempted",
                    **_ids(delivery),
                    outcome=outcome.kind.value,
                    status=outcome.status,
                    seconds=round(seconds, 4),
                    limiter_wait=round(waited, 4),
                )
            case RetryingSoon(delivery, delay):
                log.debug("delivery.retrying", **_ids(delivery), delay=round(delay, 3))
            case Delayed(delivery, seconds, why):
                log.debug(
                    "delivery.delayed", **_ids(delivery), why=why.value, seconds=round(seconds, 3)
                )
            case Redelivered(delivery):
                log.debug("delivery.redelivered", **_ids(delivery), parks=delivery.parks)
            case Held(channel, seconds):
                log.debug("delay.held", channel=channel, seconds=round(seconds, 3))
            case Delivered(delivery):
                log.debug("delivery.delivered", **_ids(delivery))
            case Dropped(delivery):
                log.debug("delivery.dropped", **_ids(delivery), why="partition revoked")
            case GaveUp(channel, delivery, reason, limit):
                ids = _ids(delivery) if delivery is not None else {"channel": channel}
                log.debug(
                    "delivery.gave_up",
                    **ids,
                    reason=reason.kind.value,
                    status=reason.status,
                    limit=None if limit is None else limit.value,
                )
            case Skipped(topic, group):
                log.debug("delay.skipped", topic=topic, group=group)


class RetrySummary:
    """Counts of the retry path per channel, said once per `interval` while there are any.
    The timer is armed by the first count after a report: an idle service wakes for nothing."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._counts: Counter[tuple[str, str]] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        self.subscriptions: dict[type, Handler] = {
            Attempted: self._attempted,
            Delivered: self._delivered,
            Delayed: self._delayed,
            Redelivered: self._redelivered,
            Held: self._held,
            GaveUp: self._gave_up,
            Dropped: self._dropped,
            Skipped: self._skipped,
        }

    def __call__(self, details: Details) -> None:
        handler = self.subscriptions.get(type(details))
        if handler is not None:
            handler(details)

    def _attempted(self, details: Attempted) -> None:
        if not details.outcome.ok:
            self._count(details.delivery.channel.name, f"failed_{details.outcome.kind.value}")

    def _delivered(self, details: Delivered) -> None:
        if details.delivery.attempts > 1:
            self._count(details.delivery.channel.name, "delivered_after_retry")

    def _delayed(self, details: Delayed) -> None:
        self._count(details.delivery.channel.name, details.why.value)

    def _redelivered(self, details: Redelivered) -> None:
        self._count(details.delivery.channel.name, "redelivered")

    def _held(self, details: Held) -> None:
        self._count(details.channel, "circuit_open")

    def _gave_up(self, details: GaveUp) -> None:
        self._count(details.channel or "-", f"dead_letter_{details.reason.kind.value}")

    def _dropped(self, details: Dropped) -> None:
        self._count(details.delivery.channel.name, "dropped_after_revoke")

    def _skipped(self, details: Skipped) -> None:
        self._count("-", f"skipped_group_{details.group}")

    def _count(self, channel: str, what: str) -> None:
        self._counts[(channel, what)] += 1
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._interval, self.report)

    def report(self) -> None:
        self._timer = None
        if not self._counts:
            return
        by_channel: dict[str, dict[str, int]] = {}
        for (channel, what), count in sorted(self._counts.items()):
            by_channel.setdefault(channel, {})[what] = count
        self._counts.clear()
        log.info("retry.summary", seconds=self._interval, channels=by_channel)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.report()
