"""Prometheus metrics as a hook of the observer: exactly the catalogue in deploy/metrics.yaml.

The hook keeps plain numbers, one cell per channel and label value, resolved when the hook is
built (retry steps and partitions when first seen) and kept: an event costs a dict lookup and
an addition, no lock, no label formatting. The numbers become metric families only when
Prometheus scrapes, through a collector in the hook's own registry, so tests and several
services in one process never share a metric. `prometheus_client` is imported when the hook
is built, not when this module is imported. Channel labels come only from the config: details
naming any other channel (a delay record of a channel removed since) are not counted per
channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..observer import (
    Attempted,
    AttributesApplied,
    AttributesCorrupt,
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
    OffsetsTruncated,
    PartitionsOwned,
    Redelivered,
    RedisChanged,
)
from ..outcome import Wait
from ..version import __version__
from .catalogue import (
    ATTEMPT_BUCKETS,
    ATTRIBUTE_RESULTS,
    ATTRIBUTE_SKIPS,
    CIRCUIT_STATES,
    COMMIT_BUCKETS,
    DEAD_LETTER_REASONS,
    HANDOFF_KINDS,
    HELP,
    RELOAD_RESULTS,
    RESULTS,
    TOPIC_KINDS,
    WAIT_REASONS,
    Histogram,
    P,
    attempt_result,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric


class _Channel:
    """One channel's numbers."""

    __slots__ = (
        "attempts",
        "circuit",
        "dead_lettered",
        "delivered",
        "disabled",
        "duration",
        "in_flight",
        "last_success",
        "queued",
        "rate_limit_wait",
        "redeliveries",
        "retries",
        "waits",
    )

    def __init__(self) -> None:
        self.attempts = dict.fromkeys(RESULTS, 0)
        self.duration = Histogram(ATTEMPT_BUCKETS)
        self.delivered = 0
        self.dead_lettered = 0
        self.retries: dict[int, int] = {}  # by step, from the first retry to it
        self.waits = dict.fromkeys(WAIT_REASONS, 0)
        self.redeliveries = 0
        self.queued = 0
        self.in_flight = 0
        self.rate_limit_wait = 0.0
        self.last_success: float | None = None  # no sample until a first 2xx
        self.circuit = "closed"
        self.disabled = False


class PrometheusHook:
    """Subscribe it to the observer; serve `exposition()` as `content_type`."""

    def __init__(
        self,
        channels: Iterable[str],
        *,
        wall_clock: Callable[[], float] = time.time,
        follows_attributes: bool = False,
    ) -> None:
        import prometheus_client
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        self.registry: CollectorRegistry = prometheus_client.CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(self)  # collect() below
        self.content_type: str = prometheus_client.CONTENT_TYPE_LATEST
        self._generate = prometheus_client.generate_latest
        self._wall_clock = wall_clock
        self._channels = {name: _Channel() for name in channels}
        self._consumed = dict.fromkeys(TOPIC_KINDS, 0)
        self._dead_letters = dict.fromkeys(DEAD_LETTER_REASONS, 0)
        self._reloads = dict.fromkeys(RELOAD_RESULTS, 0)
        self._commits = Histogram(COMMIT_BUCKETS)
        self._commit_failures = 0
        self._truncated_commits = 0
        self._lag: dict[int, int] = {}
        self._pending: dict[str, Callable[[], int]] = {}
        self._redis: bool | None = None  # no sample until Redis was first asked
        self._in_future = 0
        # The attributes follower's numbers: None without attributes.topic (not exported).
        self._attribute_records: dict[str, int] | None = None
        if follows_attributes:
            self._attribute_records = dict.fromkeys(ATTRIBUTE_RESULTS, 0)
        self._attribute_skips = dict.fromkeys(ATTRIBUTE_SKIPS, 0)
        self._attribute_lag = 0
        self._attributes_caught_up = False
        self._corrupt = 0
        self.subscriptions: dict[type, Callable[[Any], None]] = {
            Attempted: self._attempted,
            Delayed: self._delayed,
            Held: self._held,
            Redelivered: self._redelivered,
            Delivered: self._delivered,
            GaveUp: self._gave_up,
            CircuitChanged: self._circuit_changed,
            ChannelStateChanged: self._channel_state_changed,
            Consumed: self._consumed_batch,
            Committed: self._committed,
            CommitFailed: self._commit_failed,
            OffsetsTruncated: self._offsets_truncated,
            InputLag: self._input_lag,
            PartitionsOwned: self._partitions_owned,
            LaneLoad: self._lane_load,
            RedisChanged: self._redis_changed,
            AttributesCorrupt: self._attributes_corrupt,
            ConfigReloaded: self._config_reloaded,
            AttributesApplied: self._attributes_applied,
            AttributesProgress: self._attributes_progress,
            OccurredInFuture: self._occurred_in_future,
        }

    def __call__(self, details: Details) -> None:
        handler = self.subscriptions.get(type(details))
        if handler is not None:
            handler(details)

    def track_pending(self, kind: str, count: Callable[[], int]) -> None:
        """Read a hand-off's pending writes at each scrape (`kind`: delay | dead_letter)."""
        if kind not in HANDOFF_KINDS:
            raise ValueError(f"expected one of {HANDOFF_KINDS}, got {kind!r}")
        self._pending[kind] = count

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return self._generate(self.registry)

    # Transitions

    def _attempted(self, details: Attempted) -> None:
        channel = self._channels.get(details.delivery.channel.name)
        if channel is None:
            return
        channel.attempts[attempt_result(details.outcome)] += 1
        channel.duration.observe(details.seconds)
        channel.rate_limit_wait += details.limiter_wait

    def _delayed(self, details: Delayed) -> None:
        channel = self._channels.get(details.delivery.channel.name)
        if channel is None:
            return
        if details.why is Wait.RETRY:
            step = details.delivery.rounds  # the step it was delayed to, counted from 1
            channel.retries[step] = channel.retries.get(step, 0) + 1
        else:
            channel.waits[details.why.value] += 1

    def _held(self, details: Held) -> None:
        channel = self._channels.get(details.channel)
        if channel is not None:
            channel.waits["circuit_open"] += 1

    def _redelivered(self, details: Redelivered) -> None:
        channel = self._channels.get(details.delivery.channel.name)
        if channel is not None:
            channel.redeliveries += 1

    def _delivered(self, details: Delivered) -> None:
        channel = self._channels.get(details.delivery.channel.name)
        if channel is not None:
            channel.delivered += 1
            channel.last_success = self._wall_clock()

    def _gave_up(self, details: GaveUp) -> None:
        reason = details.reason.kind.value
        if reason in self._dead_letters:
            self._dead_letters[reason] += 1
        if details.delivery is not None and details.channel is not None:
            channel = self._channels.get(details.channel)
            if channel is not None:
                channel.dead_lettered += 1

    def _circuit_changed(self, details: CircuitChanged) -> None:
        channel = self._channels.get(details.channel)
        if channel is not None and details.state in CIRCUIT_STATES:
            channel.circuit = details.state

    def _channel_state_changed(self, details: ChannelStateChanged) -> None:
        channel = self._channels.get(details.channel)
        if channel is not None:
            channel.disabled = details.disabled

    def _consumed_batch(self, details: Consumed) -> None:
        self._consumed[details.topic_kind] += details.records

    def _committed(self, details: Committed) -> None:
        self._commits.observe(details.seconds)

    def _commit_failed(self, details: CommitFailed) -> None:
        self._commits.observe(details.seconds)
        self._commit_failures += 1

    def _offsets_truncated(self, details: OffsetsTruncated) -> None:
        self._truncated_commits += 1

    def _input_lag(self, details: InputLag) -> None:
        self._lag.update(details.partitions)

    def _partitions_owned(self, details: PartitionsOwned) -> None:
        """A partition that moved away leaves the metric: its lag is its new owner's to say."""
        self._lag = {p: lag for p, lag in self._lag.items() if p in details.partitions}

    def _lane_load(self, details: LaneLoad) -> None:
        channel = self._channels.get(details.channel)
        if channel is not None:
            channel.queued = details.queued
            channel.in_flight = details.in_flight

    def _redis_changed(self, details: RedisChanged) -> None:
        self._redis = details.available

    def _attributes_corrupt(self, details: AttributesCorrupt) -> None:
        self._corrupt += 1

    def _config_reloaded(self, details: ConfigReloaded) -> None:
        self._reloads["applied" if details.applied else "rejected"] += 1
        if details.applied:  # a removed channel's series go: label values stay the config's
            kept = self._channels
            self._channels = {name: kept.get(name) or _Channel() for name in details.channels}

    def _attributes_applied(self, details: AttributesApplied) -> None:
        records = self._attribute_records
        if records is None:
            return
        records["stored"] += details.stored
        records["deleted"] += details.deleted
        records["superseded"] += details.superseded
        for reason, count in details.skipped:
            records["skipped"] += count
            if reason in self._attribute_skips:
                self._attribute_skips[reason] += count

    def _attributes_progress(self, details: AttributesProgress) -> None:
        self._attribute_lag = details.lag
        self._attributes_caught_up = details.caught_up

    def _occurred_in_future(self, details: OccurredInFuture) -> None:
        self._in_future += 1

    # Scrapes

    def collect(self) -> Iterator[Metric]:
        """The catalogue's families from the numbers kept (the registry calls this)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def counter(name: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(P + name, HELP[name], labels=labels)

        def gauge(name: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(P + name, HELP[name], labels=labels)

        channels = self._channels.items()
        family = counter("events_consumed_total", ["topic_kind"])
        for kind, records in self._consumed.items():
            family.add_metric([kind], records)
        yield family
        family = counter("attempts_total", ["channel", "result"])
        for name, c in channels:
            for result, count in c.attempts.items():
                family.add_metric([name, result], count)
        yield family
        durations = HistogramMetricFamily(
            P + "attempt_duration_seconds", HELP["attempt_duration_seconds"], labels=["channel"]
        )
        for name, c in channels:
            durations.add_metric([name], c.duration.cumulative(), c.duration.sum)
        yield durations
        family = counter("deliveries_total", ["channel", "outcome"])
        for name, c in channels:
            family.add_metric([name, "delivered"], c.delivered)
            family.add_metric([name, "dead_lettered"], c.dead_lettered)
        yield family
        family = counter("retries_total", ["channel", "step"])
        for name, c in channels:
            for step, count in sorted(c.retries.items()):
                family.add_metric([name, str(step)], count)
        yield family
        family = counter("waits_total", ["channel", "reason"])
        for name, c in channels:
            for reason, count in c.waits.items():
                family.add_metric([name, reason], count)
        yield family
        family = counter("redeliveries_total", ["channel"])
        for name, c in channels:
            family.add_metric([name], c.redeliveries)
        yield family
        family = counter("dead_letters_total", ["reason"])
        for reason, count in self._dead_letters.items():
            family.add_metric([reason], count)
        yield family
        yield self._per_channel(gauge("lane_queued", ["channel"]), lambda c: c.queued)
        yield self._per_channel(gauge("in_flight_requests", ["channel"]), lambda c: c.in_flight)
        yield self._per_channel(
            counter("rate_limit_wait_seconds_total", ["channel"]), lambda c: c.rate_limit_wait
        )
        states = gauge("circuit_state", ["channel", "state"])
        for name, c in channels:
            for state in CIRCUIT_STATES:
                states.add_metric([name, state], 1 if c.circuit == state else 0)
        yield states
        yield self._per_channel(gauge("channel_disabled", ["channel"]), lambda c: c.disabled)
        lag = gauge("input_lag_records", ["partition"])
        for partition, records in sorted(self._lag.items()):
            lag.add_metric([str(partition)], records)
        yield lag
        commits = HistogramMetricFamily(
            P + "commit_duration_seconds", HELP["commit_duration_seconds"], labels=[]
        )
        commits.add_metric([], self._commits.cumulative(), self._commits.sum)
        yield commits
        yield CounterMetricFamily(
            P + "commit_failures_total", HELP["commit_failures_total"], self._commit_failures
        )
        yield CounterMetricFamily(
            P + "offset_metadata_truncated_total",
            HELP["offset_metadata_truncated_total"],
            self._truncated_commits,
        )
        pending = gauge("handoff_pending", ["kind"])
        for kind, read in self._pending.items():
            pending.add_metric([kind], read())
        yield pending
        last = gauge("last_success_timestamp_seconds", ["channel"])
        for name, c in channels:
            if c.last_success is not None:
                last.add_metric([name], c.last_success)
        yield last
        if self._redis is not None:
            yield GaugeMetricFamily(
                P + "redis_available", HELP["redis_available"], 1 if self._redis else 0
            )
        yield CounterMetricFamily(
            P + "attributes_corrupt_total", HELP["attributes_corrupt_total"], self._corrupt
        )
        reloads = counter("config_reloads_total", ["result"])
        for result, count in self._reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        yield CounterMetricFamily(
            P + "events_in_future_total", HELP["events_in_future_total"], self._in_future
        )
        yield from self._attribute_families(counter, gauge)
        build = gauge("build_info", ["version"])
        build.add_metric([__version__], 1)
        yield build

    def _attribute_families(
        self, counter: Callable[..., Any], gauge: Callable[..., Any]
    ) -> Iterator[Metric]:
        records = self._attribute_records
        if records is None:
            return
        family = counter("attribute_records_total", ["result"])
        for result, count in records.items():
            family.add_metric([result], count)
        yield family
        family = counter("attribute_records_skipped_total", ["reason"])
        for reason, count in self._attribute_skips.items():
            family.add_metric([reason], count)
        yield family
        family = gauge("attribute_lag_records")
        family.add_metric([], self._attribute_lag)
        yield family
        family = gauge("attributes_caught_up")
        family.add_metric([], 1 if self._attributes_caught_up else 0)
        yield family

    def _per_channel(self, family: Any, value: Callable[[_Channel], float]) -> Metric:
        for name, channel in self._channels.items():
            family.add_metric([name], value(channel))
        result: Metric = family
        return result
