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
    Attempted,
    AttributesCorrupt,
    ChannelStateChanged,
    CircuitChanged,
    Delayed,
    Delivered,
    Details,
    Dropped,
    GaveUp,
    HandoffChanged,
    Held,
    Redelivered,
    RetryingSoon,
    Skipped,
)

log = structlog.get_logger("consumer.retry")


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

    def __call__(self, details: Details) -> None:
        match details:
            case Attempted(delivery, outcome, _, _) if not outcome.ok:
                self._count(delivery.channel.name, f"failed_{outcome.kind.value}")
            case Delivered(delivery) if delivery.attempts > 1:
                self._count(delivery.channel.name, "delivered_after_retry")
            case Delayed(delivery, _, why):
                self._count(delivery.channel.name, why.value)
            case Redelivered(delivery):
                self._count(delivery.channel.name, "redelivered")
            case Held(channel, _):
                self._count(channel, "circuit_open")
            case GaveUp(channel, _, reason, _):
                self._count(channel or "-", f"dead_letter_{reason.kind.value}")
            case Dropped(delivery):
                self._count(delivery.channel.name, "dropped_after_revoke")
            case Skipped(_, group):
                self._count("-", f"skipped_group_{group}")

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
