"""Kafka health, learnt from aiokafka's own log lines: repeated errors become state changes.

While a broker is down aiokafka logs every failed reconnect, metadata refresh, fetch and
heartbeat, a hundred lines a second, and retries on its own. This filter folds those lines
(they go on at debug level) and says instead, once, that Kafka is unreachable (reminding
every `report_every` seconds while it lasts), and once that it recovered, with how long it was
down and how many lines it folded.

Unreachable means: the errors kept coming for `unreachable_after` seconds with no evidence of
health in that time. Evidence is `ok()`, which the listener calls after a fetch returned
records or a commit succeeded, and aiokafka's own "Discovered coordinator" line (its
connection to the group coordinator is ready again), so an idle service notices recovery too.
Errors that go on despite evidence (one broker of several down) are summarised every
`report_every` seconds instead of being hidden. Start-up noise (coordinator not available yet,
leaders moving while topics are created) ends before `unreachable_after` and prints nothing
above debug.

aiokafka logs from the event loop thread only, so the state needs no lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog

log = structlog.get_logger(__name__)

# aiokafka's connection, metadata, fetch, coordinator and produce errors that it retries by
# itself. Matched by their format string, exactly: a line this list does not know is shown.
FOLDED: Final = frozenset(
    {
        "Unable connect to node with id %s: %s",
        'Unable connect to "%s:%s": %s',
        "Unable to update metadata from %s",
        'Unable to request metadata from "%s:%s": %s',
        "Unable to request metadata from node with id %s: %r",
        "Topic %s is not available during auto-create initialization",
        "Error fetching metadata for topic %s: %s",
        "Failed fetch messages from %s: %s",
        "Failed fetch offsets from %s: %s",
        "Attempt to fetch offsets for partition %s failed due to: %s",
        "Group Coordinator Request failed: %s",
        "Marking the coordinator dead (node %s)for group %s.",
        "Error sending %s to node %s [%s] -- marking coordinator dead",
        "Heartbeat send request failed: %s. Will retry.",
        "Heartbeat failed for group %s: coordinator (node %s) is either not started or not valid",
        "Heartbeat session expired - marking coordinator dead",
        "Cannot send %r to %s: %r",
        "Could not send %r: %r",
        "Got error produce response: %s",
        "Got error produce response on topic-partition %s, retrying. Error: %s",
    }
)
# aiokafka lines that prove a broker answers.
EVIDENCE: Final = frozenset({"Discovered coordinator %s for group %s"})


@dataclass(frozen=True, slots=True)
class KafkaHealthChange:
    """What changed, for the log (and any other subscriber)."""

    event: str  # kafka.unreachable | kafka.still_unreachable | kafka.recovered | kafka.errors
    first_error: str  # the line that began this episode, as aiokafka wrote it
    last_error: str
    seconds: float  # since the episode began
    suppressed: int  # aiokafka lines folded in this episode so far


def log_change(change: KafkaHealthChange) -> None:
    """The default subscriber. `kafka.recovered` is a warning too: whoever saw the outage
    must see its end."""
    if change.event == "kafka.recovered":
        log.warning(
            change.event, down_seconds=round(change.seconds, 1), suppressed=change.suppressed
        )
    elif change.event == "kafka.errors":
        log.warning(
            change.event,
            error=change.first_error,
            last_error=change.last_error,
            seconds=round(change.seconds, 1),
            suppressed=change.suppressed,
        )
    else:
        log.warning(
            change.event,
            error=change.first_error,
            last_error=change.last_error,
            down_seconds=round(change.seconds, 1),
            suppressed=change.suppressed,
        )


@dataclass(slots=True)
class _Run:
    """Folded lines in a row: none further apart than `unreachable_after`."""

    started: float
    first: logging.LogRecord
    last: logging.LogRecord
    last_at: float
    folded: int = 1

    def change(self, event: str, now: float) -> KafkaHealthChange:
        return KafkaHealthChange(
            event, self.first.getMessage(), self.last.getMessage(), now - self.started, self.folded
        )


class KafkaHealth(logging.Filter):
    """A `logging` filter for the handler that renders library records; see the module doc."""

    def __init__(
        self,
        on_change: Callable[[KafkaHealthChange], None] = log_change,
        *,
        unreachable_after: float = 5.0,
        report_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._on_change = on_change
        self._unreachable_after = unreachable_after
        self._report_every = report_every
        self._clock = clock
        self._down = False
        self._reported_at = 0.0
        self._since_ok: _Run | None = None  # the outage, if it becomes one
        self._unreported: _Run | None = None  # for a summary when evidence does not stop them

    @property
    def reachable(self) -> bool:
        return not self._down

    def ok(self) -> None:
        """Evidence that Kafka answers: a fetch returned records, a commit succeeded."""
        run, self._since_ok = self._since_ok, None
        if self._down:
            assert run is not None
            self._down, self._unreported = False, None
            self._on_change(run.change("kafka.recovered", self._clock()))

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or not isinstance(record.msg, str):
            return True
        if record.msg in EVIDENCE:
            self.ok()
        elif record.msg in FOLDED:
            self._fold(record)
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True

    def _fold(self, record: logging.LogRecord) -> None:
        now = self._clock()
        run = self._since_ok = self._extend(self._since_ok, record, now)
        if self._down:
            if now - self._reported_at >= self._report_every:
                self._reported_at = now
                self._on_change(run.change("kafka.still_unreachable", now))
            return
        if now - run.started >= self._unreachable_after:
            self._down, self._reported_at, self._unreported = True, now, None
            self._on_change(run.change("kafka.unreachable", now))
            return
        unreported = self._unreported = self._extend(self._unreported, record, now)
        if now - unreported.started >= self._report_every:
            self._unreported = None
            self._on_change(unreported.change("kafka.errors", now))

    def _extend(self, run: _Run | None, record: logging.LogRecord, now: float) -> _Run:
        """`run` with this line added, or a new run when there is none or it has ended (a
        quiet gap: what came before was a blip). An outage never ends by going quiet."""
        if run is None or (not self._down and now - run.last_at >= self._unreachable_after):
            return _Run(now, record, record, now)
        run.folded += 1
        run.last, run.last_at = record, now
        return run


kafka_health: Final = KafkaHealth()  # one per process, like the logging set-up it belongs to
