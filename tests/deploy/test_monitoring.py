"""The metric catalogue, the alerts and the Grafana dashboard agree with each other."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from . import promql
from .observability import catalogue_problems, dashboard_problems, rules_problems
from .support import DEPLOY, KUBERNETES, REPO, catalogue, load_yaml

RUNBOOK = REPO / "docs" / "runbook.md"

RULES = KUBERNETES / "components" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "webhook-consumer.json"


def rule_object() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(RULES)
    return data


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_object()["spec"]["groups"] for r in g["rules"]}


def test_the_catalogue_is_well_formed() -> None:
    assert len(catalogue()["metrics"]) == 28
    assert catalogue_problems(catalogue()) == []


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        ("consumer_attempts_total", {"type": "counter", "help": "h"}, "the prefix"),
        ("webhook_consumer_attempts", {"type": "counter", "help": "h"}, "ends in _total"),
        ("webhook_consumer_queued_total", {"type": "gauge", "help": "h"}, "only counters"),
        ("webhook_consumer_x_total", {"type": "summary", "help": "h"}, "type must be"),
        (
            "webhook_consumer_x_total",
            {"type": "counter", "help": "h", "labels": {"delivery_id": {"source": "channel"}}},
            "would be unbounded",
        ),
        (
            "webhook_consumer_x_total",
            {"type": "counter", "help": "h", "labels": {"channel": {"source": "url"}}},
            "unknown source 'url'",
        ),
    ],
)
def test_the_catalogue_check_refuses_a_bad_entry(name: str, spec: Any, expected: str) -> None:
    broken = copy.deepcopy(catalogue())
    broken["metrics"][name] = spec
    assert [p for p in catalogue_problems(broken) if expected in p]


def test_every_alert_uses_catalogued_metrics_and_labels() -> None:
    assert rules_problems(rule_object(), catalogue()) == []


@pytest.mark.parametrize(
    ("alert", "metric"),
    [
        # The broker's lag: the pods' own gauge vanishes with them and freezes when paused.
        ("WebhookConsumerInputLagGrowing", "kafka_consumergroup_lag"),
        ("WebhookConsumerInputLagUnknown", "kafka_consumergroup_lag"),
        ("WebhookConsumerAbsent", "up"),
        ("WebhookConsumerDeadLetters", "webhook_consumer_dead_letters_total"),
        ("WebhookConsumerCircuitOpen", "webhook_consumer_circuit_state"),
        ("WebhookConsumerChannelDisabled", "webhook_consumer_channel_disabled"),
        ("WebhookConsumerChannelNoSuccess", "webhook_consumer_attempts_total"),
    ],
)
def test_the_required_alerts_watch_their_metric(alert: str, metric: str) -> None:
    rule = alerts()[alert]
    tree = promql.pq.parse(rule["expr"])
    assert metric in {s.metric for s in promql.selectors(tree)}


def test_every_alert_links_a_section_of_the_runbook() -> None:
    slugs = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    for name, rule in alerts().items():
        url = rule["annotations"].get("runbook_url", "")
        page, _, anchor = url.partition("#")
        assert page.endswith("/docs/runbook.md"), (name, url)
        assert anchor in slugs, (name, anchor)


def test_no_success_counts_channels_that_never_succeeded() -> None:
    # `and` would drop a channel without any success series; `unless` keeps it.
    assert str(promql.pq.parse(alerts()["WebhookConsumerChannelNoSuccess"]["expr"]).op) == "unless"


def _rule_breakage(expr: str | None = None, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(rules: dict[str, Any]) -> None:
        (rule,) = [
            r
            for r in rules["spec"]["groups"][0]["rules"]
            if r["alert"] == "WebhookConsumerDeadLetters"
        ]
        if expr is not None:
            rule["expr"] = expr
        rule.update(fields)

    return mutate


RULE_BREAKAGES = {
    "a misspelt metric": (
        _rule_breakage("sum by (namespace) (rate(webhook_consumer_dead_letter_total[5m])) > 0"),
        "metric webhook_consumer_dead_letter_total is not in the catalogue",
    ),
    "a label the metric lacks": (
        _rule_breakage(
            "sum by (namespace) (rate(webhook_consumer_dead_letters_total{channel='a'}[5m])) > 0"
        ),
        "has no label 'channel'",
    ),
    "a value the label never takes": (
        _rule_breakage(
            "sum by (namespace) (rate(webhook_consumer_attempts_total{result='ok'}[5m])) > 0"
        ),
        "never takes ['ok']",
    ),
    "grouping by a label nobody has": (
        _rule_breakage("sum by (tenant) (rate(webhook_consumer_dead_letters_total[5m])) > 0"),
        "groups by 'tenant'",
    ),
    "a query that does not parse": (
        _rule_breakage("sum by (namespace) (rate(webhook_consumer_dead_letters_total[5m]) > 0"),
        "does not parse",
    ),
    "a description naming a label the query drops": (
        _rule_breakage("sum by (namespace) (rate(webhook_consumer_dead_letters_total[5m])) > 0"),
        "the annotations use $labels.reason, the query keeps ['namespace']",
    ),
    "no severity": (_rule_breakage(labels={}), "labels.severity"),
    "the same alert twice": (
        lambda rules: rules["spec"]["groups"][0]["rules"].append(
            rules["spec"]["groups"][0]["rules"][0]
        ),
        "alert WebhookConsumerInputLagGrowing is defined twice",
    ),
}


@pytest.mark.parametrize("breakage", RULE_BREAKAGES)
def test_the_alert_checks_fail_on_a_broken_copy(breakage: str) -> None:
    mutate, expected = RULE_BREAKAGES[breakage]
    rules = copy.deepcopy(rule_object())
    mutate(rules)
    problems = rules_problems(rules, catalogue())
    assert [p for p in problems if expected in p], problems


def test_the_dashboard_shows_every_catalogued_metric_with_valid_queries() -> None:
    assert dashboard_problems(dashboard(), catalogue()) == []


def _first_target(board: dict[str, Any]) -> dict[str, Any]:
    panel = next(p for p in board["panels"] if p["type"] != "row")
    target: dict[str, Any] = panel["targets"][0]
    return target


def _without_panels_of(metric: str) -> Callable[[dict[str, Any]], None]:
    def mutate(board: dict[str, Any]) -> None:
        board["panels"] = [
            p for p in board["panels"] if not any(metric in t["expr"] for t in p.get("targets", []))
        ]

    return mutate


DASHBOARD_BREAKAGES = {
    "a misspelt metric": (
        lambda board: _first_target(board).update({"expr": "sum(webhook_consumer_lag)"}),
        "metric webhook_consumer_lag is not in the catalogue",
    ),
    "a histogram read without _bucket": (
        lambda board: _first_target(board).update(
            {"expr": "webhook_consumer_commit_duration_seconds"}
        ),
        "is a histogram",
    ),
    "a catalogued metric no panel shows": (
        _without_panels_of("webhook_consumer_redeliveries_total"),
        "no panel shows webhook_consumer_redeliveries_total",
    ),
    "two panels on one spot": (
        lambda board: board["panels"][2].update({"gridPos": dict(board["panels"][1]["gridPos"])}),
        "overlap",
    ),
    "a fixed data source": (
        lambda board: board["panels"][1].update({"datasource": {"uid": "prom-1"}}),
        "use the ${datasource} variable",
    ),
    "a variable on a label the metric lacks": (
        lambda board: board["templating"]["list"][2]["query"].update(
            {"query": "label_values(webhook_consumer_attempts_total, reason)"}
        ),
        "groups by 'reason'",
    ),
}


@pytest.mark.parametrize("breakage", DASHBOARD_BREAKAGES)
def test_the_dashboard_checks_fail_on_a_broken_copy(breakage: str) -> None:
    mutate, expected = DASHBOARD_BREAKAGES[breakage]
    board = copy.deepcopy(dashboard())
    mutate(board)
    problems = dashboard_problems(board, catalogue())
    assert [p for p in problems if expected in p], problems
