"""The metric catalogue in code: the closed label sets, help texts, buckets and the result of
an attempt, exactly as deploy/metrics.yaml lists them (tests/unit/test_prometheus_hook.py holds
the two equal). The Prometheus hook counts into these; nothing here imports prometheus_client."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ..outcome import Kind, Outcome

# The closed label sets of the catalogue; tests/unit/test_prometheus_hook.py holds them equal
# to deploy/metrics.yaml.
RESULTS = (
    "success",
    "redirect",
    "client_error",
    "throttled",
    "server_error",
    "timeout",
    "connection",
    "blocked",
    "error",
)
WAIT_REASONS = ("circuit_open", "parked", "throttled", "behind")
DEAD_LETTER_REASONS = (
    "http_status",
    "timeout",
    "connection",
    "blocked_destination",
    "invalid_event",
    "unknown_campaign",
    "unknown_channel",
    "internal_error",
    "unwritable",
    "max_age",
    "attributes_unavailable",
    "channel_disabled",
    "expired",
)
CIRCUIT_STATES = ("closed", "open", "half_open")
TOPIC_KINDS = ("input", "delay")
HANDOFF_KINDS = ("delay", "dead_letter")
RELOAD_RESULTS = ("applied", "rejected")
ATTRIBUTE_RESULTS = ("stored", "deleted", "superseded", "skipped")
ATTRIBUTE_SKIPS = ("bad_key", "too_large", "not_json", "not_an_object", "too_deep")

# Receivers answer in milliseconds to seconds; channel timeouts default to 10 s.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

P = "webhook_consumer_"
HELP = {
    "events_consumed_total": "Records taken from Kafka, by the kind of topic they were read from.",
    "attempts_total": "HTTP attempts, by channel and how each ended.",
    "attempt_duration_seconds": (
        "Time of one HTTP attempt, from connecting to the end of the (bounded) response."
    ),
    "deliveries_total": "Deliveries that reached their end, delivered (2xx) or dead-lettered.",
    "retries_total": "Deliveries handed to the delay schedule after a failed attempt.",
    "waits_total": "Deliveries moved to the delay path without using a retry round.",
    "redeliveries_total": "Deliveries read back from a delay topic when due.",
    "dead_letters_total": (
        "Dead letters written, by reason kind (the dead-letter record's reason.kind)."
    ),
    "lane_queued": "Deliveries waiting in a channel's lane for a worker.",
    "in_flight_requests": "HTTP requests of a channel under way now.",
    "rate_limit_wait_seconds_total": "Time deliveries spent waiting for a channel's rate limit.",
    "circuit_state": "1 for the state a channel's circuit breaker is in, 0 for the others.",
    "channel_disabled": (
        "1 while a channel is disabled (a 410 answer, or `webhook-consumer channels disable`): "
        "its deliveries are dead-lettered without a request."
    ),
    "input_lag_records": (
        "Records between the committed offset and the end of each owned input partition."
    ),
    "commit_duration_seconds": "Time of one offset commit.",
    "commit_failures_total": "Offset commits that failed (they are retried; the work is not lost).",
    "offset_metadata_truncated_total": (
        "Commits whose metadata could not name every offset finished above the commit point; "
        "a crash would redo the ones left out."
    ),
    "handoff_pending": (
        "Hand-offs (delay-topic or dead-letter writes) not yet acknowledged by Kafka."
    ),
    "last_success_timestamp_seconds": "Unix time of a channel's last 2xx answer.",
    "redis_available": (
        "1 while Redis answers, 0 when not; only exported with a redis backend configured."
    ),
    "attributes_corrupt_total": (
        "Lookups that met a user whose stored attributes cannot be read (sent as not found)."
    ),
    "config_reloads_total": (
        "Config reloads, applied or rejected (a rejected one keeps the running config)."
    ),
    "events_in_future_total": (
        "Events whose occurred_at was more than 60 s ahead of this replica's clock (clock skew); "
        "expiry counts them from now."
    ),
    "attribute_records_total": (
        "Records of the attributes topic read, by what became of them (superseded when a newer "
        "value of the user was stored already); only exported with attributes.topic configured."
    ),
    "attribute_records_skipped_total": (
        "Records of the attributes topic passed over as holding no user's attributes, by why; "
        "only exported with attributes.topic configured."
    ),
    "attribute_lag_records": (
        "Records between the attributes follower's position and the end of the attributes "
        "topic; only exported with attributes.topic configured."
    ),
    "attributes_caught_up": (
        "1 once the attributes topic was read to the end it had at start (deliveries may "
        "begin), 0 before; only exported with attributes.topic configured."
    ),
    "build_info": "Always 1; the version is the label.",
}

_FIXED_KINDS = {
    Kind.DELIVERED: "success",
    Kind.TIMEOUT: "timeout",
    Kind.CONNECTION: "connection",
    Kind.BLOCKED_DESTINATION: "blocked",
}


def attempt_result(outcome: Outcome) -> str:
    """The catalogue's `result` of one attempt: the status class of an answer, else the
    kind of failure (`error` for a bug of ours)."""
    fixed = _FIXED_KINDS.get(outcome.kind)
    if fixed is not None:
        return fixed
    status = outcome.status
    if outcome.kind is not Kind.HTTP_STATUS or status is None:
        return "error"
    if status == 429:
        return "throttled"
    if 300 <= status < 400:
        return "redirect"
    if 400 <= status < 500:
        return "client_error"
    return "server_error"


class Histogram:
    """Counts per bucket (not cumulative) and the sum; cumulated only when scraped."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, seen = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            seen += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(seen)))
        return out
