"""The status page's model, as a hook: the last minute per channel, and what is true now.

Each channel keeps a ring of 60 one-second buckets (counts and a fixed-bucket latency
histogram each), so memory is bounded whatever the traffic and a snapshot adds up at most 60
buckets. The clock is injected: tests move time by hand.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..observer import (
    Attempted,
    AttributesApplied,
    AttributesProgress,
    ChannelStateChanged,
    CircuitChanged,
    CommitFailed,
    Committed,
    ConfigReloaded,
    Consumed,
    Delayed,
    Delivered,
    Details,
    GaveUp,
    Held,
    InputLag,
    LaneLoad,
    OccurredInFuture,
    PartitionsOwned,
)
from ..outcome import Kind, Wait

WINDOW_SECONDS = 60
# Upper bounds of the latency buckets, in seconds; one more bucket holds what is slower.
LATENCY_BOUNDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass(slots=True)
class _Second:
    """What happened to a channel during one second of the clock."""

    at: int = -1
    attempts: int = 0
    ok: int = 0  # attempts answered 2xx
    delivered: int = 0
    retried: int = 0  # handed to the delay schedule after failing
    waited: int = 0  # parked, throttled or waiting for the circuit on the delay path
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))

    def reset(self, at: int) -> None:
        self.at = at
        self.attempts = self.ok = self.delivered = self.retried = self.waited = 0
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)


class _Ring:
    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets = [_Second() for _ in range(WINDOW_SECONDS)]

    def at(self, second: int) -> _Second:
        bucket = self._buckets[second % WINDOW_SECONDS]
        if bucket.at != second:
            bucket.reset(second)
        return bucket

    def recent(self, now: int) -> list[_Second]:
        """The buckets of the last WINDOW_SECONDS seconds, the current one included."""
        return [b for b in self._buckets if now - WINDOW_SECONDS < b.at <= now]


def quantile(q: float, counts: Sequence[int], bounds: Sequence[float] = LATENCY_BOUNDS) -> float:
    """The q-quantile of a fixed-bucket histogram, interpolated inside its bucket (as
    Prometheus' histogram_quantile does); the last bound when it falls beyond it."""
    total = sum(counts)
    if total == 0:
        return float("nan")
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    name: str
    circuit: str  # closed | open | half_open
    delivered: int  # last minute
    attempts: int  # last minute
    success_rate: float | None  # 2xx share of the last minute's attempts; None without any
    p50: float | None  # attempt latency, seconds
    p99: float | None
    retried: int  # last minute
    waited: int  # last minute: parked, throttled, circuit open
    queued: int  # now
    in_flight: int  # now
    dead_letters: tuple[tuple[str, int], ...]  # since start, by reason
    last_success: float | None  # Unix time
    disabled: str | None = None  # by whom, when and why; None while the channel is enabled


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    lag: int | None  # None until measured


@dataclass(frozen=True, slots=True)
class AttributesStatus:
    """The attributes follower of `attributes.topic`."""

    topic: str
    caught_up: bool  # read to the end the topic had at start
    lag: int | None  # records behind the end; None until measured
    written: int  # last minute: users stored or deleted
    superseded: int  # last minute: a newer value was stored already
    skipped: tuple[tuple[str, int], ...]  # since start, by reason


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    uptime: float
    channels: tuple[ChannelStatus, ...]
    partitions: tuple[PartitionStatus, ...]
    consumed_input: int  # last minute
    consumed_delay: int  # last minute
    commits: int  # last minute
    commit_failures: int  # since start
    unrouted_dead_letters: tuple[tuple[str, int], ...]  # records that never became deliveries
    expired: int = 0  # since start: deliveries dead-lettered as stale (every channel)
    events_in_future: int = 0  # since start: occurred_at far ahead of our clock
    attributes: AttributesStatus | None = None  # None without attributes.topic


class _ChannelBoard:
    __slots__ = (
        "circuit",
        "dead_letters",
        "disabled",
        "in_flight",
        "last_success",
        "queued",
        "ring",
    )

    def __init__(self) -> None:
        self.ring = _Ring()
        self.circuit = "closed"
        self.queued = 0
        self.in_flight = 0
        self.dead_letters: Counter[str] = Counter()
        self.last_success: float | None = None
        self.disabled: str | None = None

    def status(self, name: str, now: int) -> ChannelStatus:
        recent = self.ring.recent(now)
        attempts = sum(b.attempts for b in recent)
        latency = [sum(column) for column in zip(*(b.latency for b in recent), strict=True)]
        return ChannelStatus(
            name=name,
            circuit=self.circuit,
            delivered=sum(b.delivered for b in recent),
            attempts=attempts,
            success_rate=sum(b.ok for b in recent) / attempts if attempts else None,
            p50=quantile(0.5, latency) if attempts else None,
            p99=quantile(0.99, latency) if attempts else None,
            retried=sum(b.retried for b in recent),
            waited=sum(b.waited for b in recent),
            queued=self.queued,
            in_flight=self.in_flight,
            dead_letters=tuple(sorted(self.dead_letters.items())),
            last_success=self.last_success,
            disabled=self.disabled,
        )


@dataclass(slots=True)
class _KafkaSecond:
    at: int = -1
    input: int = 0
    delay: int = 0
    commits: int = 0
    attributes_written: int = 0
    attributes_superseded: int = 0


class StatusBoard:
    """Subscribe it to the observer; `snapshot()` is what the page shows."""

    def __init__(
        self,
        channels: Iterable[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        attributes_topic: str | None = None,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._started = clock()
        self._channels = {name: _ChannelBoard() for name in channels}
        self._kafka = [_KafkaSecond() for _ in range(WINDOW_SECONDS)]
        self._lag: dict[int, int | None] = {}
        self._commit_failures = 0
        self._unrouted: Counter[str] = Counter()
        self._expired = 0
        self._in_future = 0
        self._attributes_topic = attributes_topic
        self._attributes_caught_up = False
        self._attributes_lag: int | None = None
        self._attributes_skipped: Counter[str] = Counter()
        self.subscriptions: dict[type, Callable[[Any], None]] = {
            Attempted: self._attempted,
            Delivered: self._delivered,
            Delayed: self._delayed,
            Held: self._held,
            GaveUp: self._gave_up,
            LaneLoad: self._lane_load,
            CircuitChanged: self._circuit_changed,
            ChannelStateChanged: self._channel_state_changed,
            Consumed: self._consumed,
            Committed: self._committed,
            CommitFailed: self._commit_failed,
            PartitionsOwned: self._partitions_owned,
            InputLag: self._input_lag,
            ConfigReloaded: self._config_reloaded,
            AttributesApplied: self._attributes_applied,
            AttributesProgress: self._attributes_progress,
            OccurredInFuture: self._occurred_in_future,
        }

    def __call__(self, details: Details) -> None:
        handler = self.subscriptions.get(type(details))
        if handler is not None:
            handler(details)

    def _second(self, channel: str) -> _Second | None:
        board = self._channels.get(channel)
        return None if board is None else board.ring.at(int(self._clock()))

    def _attempted(self, details: Attempted) -> None:
        second = self._second(details.delivery.channel.name)
        if second is not None:
            second.attempts += 1
            second.ok += details.outcome.ok
            second.latency[bisect.bisect_left(LATENCY_BOUNDS, details.seconds)] += 1

    def _delivered(self, details: Delivered) -> None:
        board = self._channels.get(details.delivery.channel.name)
        if board is not None:
            board.ring.at(int(self._clock())).delivered += 1
            board.last_success = self._wall_clock()

    def _delayed(self, details: Delayed) -> None:
        second = self._second(details.delivery.channel.name)
        if second is None:
            return
        if details.why is Wait.RETRY:
            second.retried += 1
        else:
            second.waited += 1

    def _held(self, details: Held) -> None:
        second = self._second(details.channel)
        if second is not None:
            second.waited += 1

    def _gave_up(self, details: GaveUp) -> None:
        self._expired += details.reason.kind is Kind.EXPIRED
        board = None
        if details.delivery is not None:
            board = self._channels.get(details.channel or "")
        if board is not None:
            board.dead_letters[details.reason.kind.value] += 1
        else:
            self._unrouted[details.reason.kind.value] += 1

    def _config_reloaded(self, details: ConfigReloaded) -> None:
        if details.applied:
            kept = self._channels
            self._channels = {name: kept.get(name) or _ChannelBoard() for name in details.channels}

    def _lane_load(self, details: LaneLoad) -> None:
        board = self._channels.get(details.channel)
        if board is not None:
            board.queued, board.in_flight = details.queued, details.in_flight

    def _circuit_changed(self, details: CircuitChanged) -> None:
        board = self._channels.get(details.channel)
        if board is not None:
            board.circuit = details.state

    def _channel_state_changed(self, details: ChannelStateChanged) -> None:
        board = self._channels.get(details.channel)
        if board is None:
            return
        board.disabled = None
        if details.disabled:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(details.at))
            board.disabled = f"by {details.by} at {when}: {details.reason or 'no reason given'}"

    def _consumed(self, details: Consumed) -> None:
        kafka = self._kafka_second()
        if details.topic_kind == "input":
            kafka.input += details.records
        else:
            kafka.delay += details.records

    def _committed(self, details: Committed) -> None:
        self._kafka_second().commits += 1

    def _commit_failed(self, details: CommitFailed) -> None:
        self._commit_failures += 1

    def _partitions_owned(self, details: PartitionsOwned) -> None:
        self._lag = {p: self._lag.get(p) for p in sorted(details.partitions)}

    def _input_lag(self, details: InputLag) -> None:
        for partition, records in details.partitions:
            if partition in self._lag:
                self._lag[partition] = records

    def _attributes_applied(self, details: AttributesApplied) -> None:
        second = self._kafka_second()
        second.attributes_written += details.stored + details.deleted
        second.attributes_superseded += details.superseded
        for reason, count in details.skipped:
            self._attributes_skipped[reason] += count

    def _attributes_progress(self, details: AttributesProgress) -> None:
        self._attributes_caught_up = details.caught_up
        self._attributes_lag = details.lag

    def _occurred_in_future(self, details: OccurredInFuture) -> None:
        self._in_future += 1

    def _kafka_second(self) -> _KafkaSecond:
        now = int(self._clock())
        second = self._kafka[now % WINDOW_SECONDS]
        if second.at != now:
            second.at, second.input, second.delay, second.commits = now, 0, 0, 0
            second.attributes_written = second.attributes_superseded = 0
        return second

    def _attributes(self, kafka: list[_KafkaSecond]) -> AttributesStatus | None:
        if self._attributes_topic is None:
            return None
        return AttributesStatus(
            topic=self._attributes_topic,
            caught_up=self._attributes_caught_up,
            lag=self._attributes_lag,
            written=sum(k.attributes_written for k in kafka),
            superseded=sum(k.attributes_superseded for k in kafka),
            skipped=tuple(sorted(self._attributes_skipped.items())),
        )

    def snapshot(self) -> StatusSnapshot:
        now = self._clock()
        second = int(now)
        kafka = [k for k in self._kafka if second - WINDOW_SECONDS < k.at <= second]
        return StatusSnapshot(
            uptime=now - self._started,
            channels=tuple(board.status(name, second) for name, board in self._channels.items()),
            partitions=tuple(PartitionStatus(p, lag) for p, lag in self._lag.items()),
            consumed_input=sum(k.input for k in kafka),
            consumed_delay=sum(k.delay for k in kafka),
            commits=sum(k.commits for k in kafka),
            commit_failures=self._commit_failures,
            unrouted_dead_letters=tuple(sorted(self._unrouted.items())),
            expired=self._expired,
            events_in_future=self._in_future,
            attributes=self._attributes(kafka),
        )
