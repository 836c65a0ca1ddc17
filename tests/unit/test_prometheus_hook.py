"""The Prometheus hook, fed synthetic details: exactly the catalogue's metrics, labels bound
once, values that follow the transitions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from consumer import __version__
from consumer.catalog import Channel
from consumer.delivery import Delivery
from consumer.hooks import catalogue as label_sets
from consumer.hooks.catalogue import attempt_result
from consumer.hooks.prometheus import PrometheusHook
from consumer.observer import (
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
    GaveUp,
    Held,
    InputLag,
    LaneLoad,
    OccurredInFuture,
    PartitionsOwned,
    Redelivered,
    RedisChanged,
)
from consumer.outcome import Kind, Limit, Outcome, Wait, from_response
from tests import catalogue
from tests.catalogue import Bounds, value

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory

OK = from_response(204, None, "")
CHANNELS = ("coupon-system", "push-service")
BOUNDS = Bounds(channels=CHANNELS, partitions=range(12), steps=7)


@pytest.fixture
def channels(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> dict[str, Channel]:
    _, catalog = build_catalog([channel_cfg(name) for name in (*CHANNELS, "removed")])
    return dict(catalog.channels)


@pytest.fixture
def hook() -> PrometheusHook:
    return PrometheusHook(CHANNELS, wall_clock=lambda: 1_700_000_000.5, follows_attributes=True)


def delivery(channel: Channel, rounds: int = 0) -> Delivery:
    return Delivery("d-1", channel, "c", {}, [], [], [], attempts=1, rounds=rounds)


def text(hook: PrometheusHook) -> str:
    return hook.exposition().decode()


@pytest.mark.parametrize(
    ("label_set", "metric", "label"),
    [
        (label_sets.RESULTS, "webhook_consumer_attempts_total", "result"),
        (label_sets.WAIT_REASONS, "webhook_consumer_waits_total", "reason"),
        (label_sets.DEAD_LETTER_REASONS, "webhook_consumer_dead_letters_total", "reason"),
        (label_sets.CIRCUIT_STATES, "webhook_consumer_circuit_state", "state"),
        (label_sets.TOPIC_KINDS, "webhook_consumer_events_consumed_total", "topic_kind"),
        (label_sets.HANDOFF_KINDS, "webhook_consumer_handoff_pending", "kind"),
        (label_sets.RELOAD_RESULTS, "webhook_consumer_config_reloads_total", "result"),
        (label_sets.ATTRIBUTE_RESULTS, "webhook_consumer_attribute_records_total", "result"),
        (
            label_sets.ATTRIBUTE_SKIPS,
            "webhook_consumer_attribute_records_skipped_total",
            "reason",
        ),
    ],
)
def test_the_closed_label_sets_are_the_catalogues(
    label_set: tuple[str, ...], metric: str, label: str
) -> None:
    assert list(label_set) == catalogue.allowed_values(metric, label)


def test_names_types_and_help_texts_are_the_catalogues(hook: PrometheusHook) -> None:
    hook(RedisChanged(True, ""))
    exported = {}
    for family in hook.registry.collect():
        if family.name.startswith(catalogue.PREFIX):
            name = family.name + ("_total" if family.type == "counter" else "")
            exported[name] = (family.type, family.documentation)
    expected = {name: (spec["type"], spec["help"]) for name, spec in catalogue.metrics().items()}
    assert exported == expected


def test_every_transition_exports_only_catalogued_bounded_labels(
    hook: PrometheusHook, channels: dict[str, Channel]
) -> None:
    coupon = channels["coupon-system"]
    for details in every_kind_of_details(channels):
        hook(details)
    hook.track_pending("delay", lambda: 3)
    hook.track_pending("dead_letter", lambda: 0)
    exposition = text(hook)
    assert catalogue.problems(exposition, BOUNDS) == []
    assert catalogue.exported_metrics(exposition) == set(catalogue.metrics())
    assert "removed" not in exposition  # a channel no longer configured gets no series
    assert delivery(coupon).id not in exposition
    assert "process_cpu_seconds_total" in exposition
    assert "python_info" in exposition
    assert "_created" not in exposition


def every_kind_of_details(channels: dict[str, Channel]) -> list[Any]:
    coupon, push, removed = channels["coupon-system"], channels["push-service"], channels["removed"]
    server_error = from_response(503, None, "")
    return [
        Consumed("input", 5),
        Consumed("delay", 2),
        Attempted(delivery(coupon), OK, 0.02, 0.5),
        Attempted(delivery(push), server_error, 1.5, 0.0),
        Attempted(delivery(removed), OK, 0.02, 0.0),
        Delayed(delivery(push, rounds=1), 5.0, Wait.RETRY),
        Delayed(delivery(push), 5.0, Wait.PARKED),
        Held("push-service", 3.0),
        Redelivered(delivery(push)),
        Delivered(delivery(coupon)),
        Delivered(delivery(removed)),
        GaveUp("push-service", delivery(push), server_error, Limit.SCHEDULE),
        GaveUp(None, None, Outcome(Kind.INVALID_EVENT, retryable=False), None),
        GaveUp("removed", None, Outcome(Kind.UNKNOWN_CHANNEL, retryable=False), None),
        CircuitChanged("push-service", "open", 5, 30.0),
        ChannelStateChanged("push-service", True, "receiver", "410 Gone", 1_700_000_000.0, 410),
        ChannelStateChanged("removed", True, "ops@host", "maintenance", 1_700_000_000.0),
        Committed(0.004, 3),
        CommitFailed(0.2, "RebalanceInProgressError()"),
        PartitionsOwned(frozenset({0, 1, 2}), assigned=True),
        InputLag(((0, 10), (1, 0), (2, 3))),
        LaneLoad("coupon-system", 7, 2),
        RedisChanged(False, "Connection refused"),
        ConfigReloaded(applied=False, problems=2),
        GaveUp("coupon-system", delivery(coupon), Outcome(Kind.EXPIRED, retryable=False), None),
        OccurredInFuture(3600.0),
        AttributesApplied(7, 2, 1, (("not_json", 2), ("bad_key", 1))),
        AttributesApplied(3, 0, 0, ()),
        AttributesProgress(records=16, lag=40, caught_up=False),
        AttributesProgress(records=16, lag=5, caught_up=True),
    ]


def test_the_values_follow_the_transitions(
    hook: PrometheusHook, channels: dict[str, Channel]
) -> None:
    for details in every_kind_of_details(channels):
        hook(details)
    hook.track_pending("delay", lambda: 3)
    t = text(hook)
    assert value(t, "webhook_consumer_events_consumed_total", topic_kind="input") == 5
    assert value(t, "webhook_consumer_events_consumed_total", topic_kind="delay") == 2
    assert (
        value(t, "webhook_consumer_attempts_total", channel="coupon-system", result="success") == 1
    )
    assert (
        value(t, "webhook_consumer_attempts_total", channel="push-service", result="server_error")
        == 1
    )
    assert value(t, "webhook_consumer_attempt_duration_seconds_count", channel="push-service") == 1
    assert value(t, "webhook_consumer_attempt_duration_seconds_sum", channel="push-service") == 1.5
    assert (
        value(t, "webhook_consumer_rate_limit_wait_seconds_total", channel="coupon-system") == 0.5
    )
    assert value(t, "webhook_consumer_retries_total", channel="push-service", step="1") == 1
    assert value(t, "webhook_consumer_waits_total", channel="push-service", reason="parked") == 1
    assert (
        value(t, "webhook_consumer_waits_total", channel="push-service", reason="circuit_open") == 1
    )
    assert value(t, "webhook_consumer_redeliveries_total", channel="push-service") == 1
    assert (
        value(t, "webhook_consumer_deliveries_total", channel="coupon-system", outcome="delivered")
        == 1
    )
    assert (
        value(
            t, "webhook_consumer_deliveries_total", channel="push-service", outcome="dead_lettered"
        )
        == 1
    )
    # Dead letters count every reason, records that never became deliveries included.
    assert value(t, "webhook_consumer_dead_letters_total", reason="http_status") == 1
    assert value(t, "webhook_consumer_dead_letters_total", reason="invalid_event") == 1
    assert value(t, "webhook_consumer_dead_letters_total", reason="unknown_channel") == 1
    assert value(t, "webhook_consumer_circuit_state", channel="push-service", state="open") == 1
    assert value(t, "webhook_consumer_circuit_state", channel="push-service", state="closed") == 0
    assert value(t, "webhook_consumer_circuit_state", channel="coupon-system", state="closed") == 1
    assert value(t, "webhook_consumer_channel_disabled", channel="push-service") == 1
    assert value(t, "webhook_consumer_channel_disabled", channel="coupon-system") == 0
    assert value(t, "webhook_consumer_commit_duration_seconds_count") == 2
    assert value(t, "webhook_consumer_commit_failures_total") == 1
    assert value(t, "webhook_consumer_input_lag_records", partition="0") == 10
    assert value(t, "webhook_consumer_input_lag_records", partition="2") == 3
    assert value(t, "webhook_consumer_lane_queued", channel="coupon-system") == 7
    assert value(t, "webhook_consumer_in_flight_requests", channel="coupon-system") == 2
    assert value(t, "webhook_consumer_handoff_pending", kind="delay") == 3
    assert (
        value(t, "webhook_consumer_last_success_timestamp_seconds", channel="coupon-system")
        == 1_700_000_000.5
    )
    assert value(t, "webhook_consumer_redis_available") == 0
    assert value(t, "webhook_consumer_config_reloads_total", result="rejected") == 1
    assert value(t, "webhook_consumer_config_reloads_total", result="applied") == 0
    assert value(t, "webhook_consumer_build_info", version=__version__) == 1
    assert value(t, "webhook_consumer_dead_letters_total", reason="expired") == 1
    assert value(t, "webhook_consumer_events_in_future_total") == 1
    records = "webhook_consumer_attribute_records_total"
    assert value(t, records, result="stored") == 10
    assert value(t, records, result="deleted") == 2
    assert value(t, records, result="superseded") == 1
    assert value(t, records, result="skipped") == 3
    skipped = "webhook_consumer_attribute_records_skipped_total"
    assert value(t, skipped, reason="not_json") == 2
    assert value(t, skipped, reason="bad_key") == 1
    assert value(t, skipped, reason="too_large") == 0
    assert value(t, "webhook_consumer_attribute_lag_records") == 5
    assert value(t, "webhook_consumer_attributes_caught_up") == 1


def test_attribute_metrics_are_absent_without_an_attributes_topic() -> None:
    hook = PrometheusHook(CHANNELS)
    hook(AttributesProgress(records=1, lag=0, caught_up=True))
    exported = text(hook)
    # The follower's series; attributes_corrupt_total is the lookups' and always there.
    for name in ("attribute_records", "attribute_lag_records", "attributes_caught_up"):
        assert f"webhook_consumer_{name}" not in exported


def test_every_channel_starts_closed_with_zero_counts(hook: PrometheusHook) -> None:
    t = text(hook)
    for name in CHANNELS:
        assert value(t, "webhook_consumer_circuit_state", channel=name, state="closed") == 1
        assert value(t, "webhook_consumer_circuit_state", channel=name, state="open") == 0
        assert value(t, "webhook_consumer_attempts_total", channel=name, result="success") == 0
        assert value(t, "webhook_consumer_deliveries_total", channel=name, outcome="delivered") == 0


def test_redis_available_is_absent_until_redis_was_asked(hook: PrometheusHook) -> None:
    assert "webhook_consumer_redis_available" not in text(hook)
    hook(RedisChanged(False, "refused"))
    hook(RedisChanged(True, ""))
    assert value(text(hook), "webhook_consumer_redis_available") == 1


def test_a_partition_that_moved_away_leaves_the_lag_metric(hook: PrometheusHook) -> None:
    hook(PartitionsOwned(frozenset({0, 1}), assigned=True))
    hook(InputLag(((0, 4), (1, 6))))
    hook(PartitionsOwned(frozenset({1}), assigned=False))
    t = text(hook)
    assert value(t, "webhook_consumer_input_lag_records", partition="0") is None
    assert value(t, "webhook_consumer_input_lag_records", partition="1") == 6
    hook(InputLag(((1, 2),)))
    assert value(text(hook), "webhook_consumer_input_lag_records", partition="1") == 2


def test_pending_hand_offs_are_read_at_each_scrape(hook: PrometheusHook) -> None:
    pending = [0]
    hook.track_pending("dead_letter", lambda: pending[0])
    assert value(text(hook), "webhook_consumer_handoff_pending", kind="dead_letter") == 0
    pending[0] = 4
    assert value(text(hook), "webhook_consumer_handoff_pending", kind="dead_letter") == 4
    with pytest.raises(ValueError, match="expected one of"):
        hook.track_pending("dead letter", lambda: 0)


def test_events_only_add_up_numbers_the_metric_families_are_built_when_scraped(
    hook: PrometheusHook, channels: dict[str, Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    scrapes = []
    collect = hook.collect
    monkeypatch.setattr(hook, "collect", lambda: scrapes.append(1) or collect())
    hook.registry.unregister(hook)
    hook.registry.register(hook)  # the patched collect
    for _ in range(100):
        for details in every_kind_of_details(channels):
            hook(details)
    assert scrapes == []
    assert value(text(hook), "webhook_consumer_events_consumed_total", topic_kind="input") == 500
    assert scrapes == [1]


def test_two_hooks_in_one_process_keep_their_own_counts(channels: dict[str, Channel]) -> None:
    first, second = PrometheusHook(CHANNELS), PrometheusHook(CHANNELS)
    first(Delivered(delivery(channels["coupon-system"])))
    name = "webhook_consumer_deliveries_total"
    labels = {"channel": "coupon-system", "outcome": "delivered"}
    assert value(text(first), name, **labels) == 1
    assert value(text(second), name, **labels) == 0


@pytest.mark.parametrize(
    ("outcome", "result"),
    [
        (from_response(200, None, ""), "success"),
        (from_response(299, None, ""), "success"),
        (from_response(301, None, ""), "redirect"),
        (from_response(400, None, ""), "client_error"),
        (from_response(404, None, ""), "client_error"),
        (from_response(408, None, ""), "client_error"),
        (from_response(429, None, ""), "throttled"),
        (from_response(500, None, ""), "server_error"),
        (from_response(503, "5", ""), "server_error"),
        (Outcome(Kind.TIMEOUT, retryable=True), "timeout"),
        (Outcome(Kind.CONNECTION, retryable=True), "connection"),
        (Outcome(Kind.BLOCKED_DESTINATION, retryable=False), "blocked"),
        (Outcome(Kind.INTERNAL_ERROR, retryable=True), "error"),
    ],
)
def test_attempt_results(outcome: Outcome, result: str) -> None:
    assert attempt_result(outcome) == result


def test_every_reason_a_dead_letter_can_have_is_catalogued() -> None:
    never_a_dead_letter = {Kind.DELIVERED, Kind.CIRCUIT_OPEN}  # an open circuit ends as max_age
    reasons = {kind.value for kind in Kind} - {kind.value for kind in never_a_dead_letter}
    assert reasons == set(label_sets.DEAD_LETTER_REASONS)


def test_prometheus_client_loads_when_the_hook_is_built_not_when_imported(tmp_path: Path) -> None:
    code = """
        import sys
        import consumer.service
        from consumer.hooks.prometheus import PrometheusHook
        print("prometheus_client" in sys.modules)
        PrometheusHook(["a"])
        print("prometheus_client" in sys.modules)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["False", "True"]


def test_a_reload_adds_new_channels_and_drops_removed_ones(hook: PrometheusHook) -> None:
    kept, gone = CHANNELS[0], CHANNELS[1]
    hook(ConfigReloaded(applied=True, problems=0, channels=(kept, "added-later")))
    t = text(hook)
    assert value(t, "webhook_consumer_circuit_state", channel="added-later", state="closed") == 1
    assert value(t, "webhook_consumer_circuit_state", channel=kept, state="closed") == 1
    assert f'channel="{gone}"' not in t  # label values stay the configured channels
    assert value(t, "webhook_consumer_config_reloads_total", result="applied") == 1
