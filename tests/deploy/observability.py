"""Checks of the metric catalogue, the alerts and the Grafana dashboard ([] when fine)."""

from __future__ import annotations

import re
from typing import Any

import promql_parser as pq

from . import promql

METRIC_TYPES = {"counter", "gauge", "histogram"}
# Labels whose values would be unbounded: never on a metric.
UNBOUNDED_LABELS = {"id", "event_id", "delivery_id", "user_id", "url", "path", "message", "key"}
SEVERITIES = {"warning", "critical"}
_LABEL_REFERENCE = re.compile(r"\$labels\.(\w+)")


def catalogue_problems(catalogue: dict[str, Any]) -> list[str]:
    problems = []
    sources = catalogue.get("sources", {})
    for name, spec in catalogue["metrics"].items():
        if not re.fullmatch(r"webhook_consumer_[a-z0-9_]+", name):
            problems.append(f"{name}: expected the prefix webhook_consumer_ and snake case")
        if spec.get("type") not in METRIC_TYPES:
            problems.append(f"{name}: type must be one of {sorted(METRIC_TYPES)}")
        if spec.get("type") == "counter" and not name.endswith("_total"):
            problems.append(f"{name}: a counter's name ends in _total")
        if spec.get("type") != "counter" and name.endswith("_total"):
            problems.append(f"{name}: only counters end in _total")
        if not spec.get("help"):
            problems.append(f"{name}: help text missing")
        for label, values in spec.get("labels", {}).items():
            if label in UNBOUNDED_LABELS:
                problems.append(f"{name}: label {label!r} would be unbounded")
            if not isinstance(values, dict) or len(values) != 1:
                problems.append(f"{name}{{{label}}}: expected either values: or source:")
            elif "source" in values and values["source"] not in sources:
                problems.append(f"{name}{{{label}}}: unknown source {values['source']!r}")
            elif "values" in values and not values["values"]:
                problems.append(f"{name}{{{label}}}: an empty set of values")
    return problems


def alert_problems(rule: dict[str, Any], catalogue: dict[str, Any]) -> list[str]:
    """One alerting rule: its query against the catalogue, its labels and annotations."""
    name = rule.get("alert", "(no name)")
    problems = [f"{name}: {p}" for p in promql.problems(str(rule["expr"]), catalogue)]
    if rule.get("labels", {}).get("severity") not in SEVERITIES:
        problems.append(f"{name}: labels.severity must be one of {sorted(SEVERITIES)}")
    annotations = rule.get("annotations", {})
    for required in ("summary", "description"):
        if not annotations.get(required):
            problems.append(f"{name}: annotations.{required} missing")
    if problems:
        return problems
    kept = promql.output_labels(pq.parse(str(rule["expr"])), catalogue)
    for text in annotations.values():
        for label in _LABEL_REFERENCE.findall(text):
            if kept is not None and label not in kept:
                problems.append(
                    f"{name}: the annotations use $labels.{label}, the query keeps {sorted(kept)}"
                )
    return problems


def rules_problems(rule_object: dict[str, Any], catalogue: dict[str, Any]) -> list[str]:
    rules = [r for g in rule_object["spec"]["groups"] for r in g["rules"]]
    names = [r.get("alert") for r in rules]
    problems = [
        f"alert {n} is defined twice" for n in sorted({n for n in names if names.count(n) > 1})
    ]
    for rule in rules:
        problems.extend(alert_problems(rule, catalogue))
    return problems


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    queries = [
        (f"panel {p.get('title')!r} target {t.get('refId')}", t["expr"])
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", text.strip())
            if match is None:
                queries.append((f"variable {variable['name']}", text))
            else:  # label_values(selector, label): the selector must exist, with that label
                selector, label = match.groups()
                queries.append((f"variable {variable['name']}", f"count by ({label}) ({selector})"))
    return queries


def _overlap(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def dashboard_problems(dashboard: dict[str, Any], catalogue: dict[str, Any]) -> list[str]:
    problems = []
    for key in ("uid", "title", "schemaVersion", "panels"):
        if key not in dashboard:
            problems.append(f"dashboard: {key} missing")
    every = panels(dashboard)
    ids = [p.get("id") for p in every]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append("panel ids must be present and unique")
    for i, a in enumerate(every):
        grid = a.get("gridPos", {})
        if not {"x", "y", "w", "h"} <= set(grid) or grid["x"] + grid["w"] > 24:
            problems.append(f"panel {a.get('title')!r}: gridPos must fit the 24 columns")
            continue
        for b in every[i + 1 :]:
            if "gridPos" in b and _overlap(grid, b["gridPos"]):
                problems.append(f"panels {a.get('title')!r} and {b.get('title')!r} overlap")
        if a.get("type") != "row":
            if a.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"panel {a.get('title')!r}: use the ${{datasource}} variable")
            if not a.get("targets"):
                problems.append(f"panel {a.get('title')!r}: no query")
    used: set[str] = set()
    for where, query in dashboard_queries(dashboard):
        found = promql.problems(query, catalogue)
        problems.extend(f"{where}: {p}" for p in found)
        if any(p.startswith("does not parse") for p in found):
            continue
        tree = pq.parse(promql.without_grafana_variables(query))
        used |= {promql.base_metric(s.metric or "", catalogue) for s in promql.selectors(tree)}
    for metric in sorted(set(catalogue["metrics"]) - used):
        problems.append(f"no panel shows {metric}")
    return problems
