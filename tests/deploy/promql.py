"""PromQL read with a real parser: which series an expression selects, which labels it keeps.

Every alert and dashboard query is checked against the metric catalogue (deploy/metrics.yaml):
metric names, label names, and the values of labels with a closed set of values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import promql_parser as pq

# Labels Prometheus puts on every scraped series (the Prometheus Operator's target labels).
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
)
# Series Prometheus writes itself for every target.
PROMETHEUS_SERIES = frozenset({"up"})
# Series of exporters beside the service that the alerts read, with their own labels:
# kafka-exporter's (and Strimzi's Kafka Exporter's) broker-side consumer group lag.
EXTERNAL_SERIES = {"kafka_consumergroup_lag": frozenset({"consumergroup", "topic", "partition"})}
HISTOGRAM_SERIES = {"_bucket": {"le"}, "_sum": set(), "_count": set()}
# Grafana's variables, replaced by something of the same kind before parsing.
_GRAFANA_DURATIONS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
_GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
VARIABLE_VALUE = "__grafana_variable__"


@dataclass(frozen=True, slots=True)
class Selector:
    metric: str | None
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


def without_grafana_variables(expr: str) -> str:
    for variable, duration in _GRAFANA_DURATIONS.items():
        expr = expr.replace(variable, duration)
    return _GRAFANA_VARIABLE.sub(VARIABLE_VALUE, expr)


def _children(node: Any) -> list[Any]:
    if isinstance(node, pq.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, pq.AggregateExpr):
        return [node.expr] + ([node.param] if isinstance(node.param, pq.Expr) else [])
    if isinstance(node, pq.Call):
        return [arg for arg in node.args if isinstance(arg, pq.Expr)]
    if isinstance(node, pq.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
        return [node.expr]
    return []


def _nodes(node: Any) -> list[Any]:
    found = [node]
    for child in _children(node):
        found.extend(_nodes(child))
    return found


def selectors(tree: Any) -> list[Selector]:
    found = []
    for node in _nodes(tree):
        if isinstance(node, pq.VectorSelector):
            matchers = tuple(
                (m.name, str(m.op).removeprefix("MatchOp."), m.value)
                for m in node.matchers.matchers
            )
            found.append(Selector(node.name, matchers))
    return found


def grouping_labels(tree: Any) -> set[str]:
    """Labels named in by/without and on/ignoring/group_left/group_right clauses."""
    names: set[str] = set()
    for node in _nodes(tree):
        if isinstance(node, pq.AggregateExpr) and node.modifier is not None:
            names.update(node.modifier.labels)
        if isinstance(node, pq.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                names.update(node.modifier.matching.labels)
            names.update(node.modifier.group_labels or [])
    return names


def series_labels(metric: str | None, catalogue: dict[str, Any]) -> set[str] | None:
    """The labels a series of this name carries; None for a name that is not catalogued."""
    metrics = catalogue["metrics"]
    if metric in PROMETHEUS_SERIES:
        return set(TARGET_LABELS)
    if metric in EXTERNAL_SERIES:
        return set(EXTERNAL_SERIES[metric]) | TARGET_LABELS
    if metric in metrics:
        if metrics[metric]["type"] == "histogram":
            return None  # a histogram is read through its _bucket, _sum and _count series
        return set(metrics[metric]["labels"]) | TARGET_LABELS
    for suffix, extra in HISTOGRAM_SERIES.items():
        base = (metric or "").removesuffix(suffix)
        if base != metric and metrics.get(base, {}).get("type") == "histogram":
            return set(metrics[base]["labels"]) | TARGET_LABELS | extra
    return None


def base_metric(metric: str, catalogue: dict[str, Any]) -> str:
    for suffix in HISTOGRAM_SERIES:
        base = metric.removesuffix(suffix)
        if base != metric and base in catalogue["metrics"]:
            return base
    return metric


def output_labels(node: Any, catalogue: dict[str, Any]) -> set[str] | None:
    """The labels the result keeps; None when that cannot be told (all of some series)."""
    if isinstance(node, pq.VectorSelector):
        return series_labels(node.name, catalogue)
    if isinstance(node, pq.AggregateExpr):
        if node.modifier is None:
            return set()
        if node.modifier.type == pq.AggModifierType.By:
            return set(node.modifier.labels)
        inner = output_labels(node.expr, catalogue)
        return None if inner is None else inner - set(node.modifier.labels)
    if isinstance(node, pq.BinaryExpr):
        lhs, rhs = output_labels(node.lhs, catalogue), output_labels(node.rhs, catalogue)
        if isinstance(node.lhs, pq.NumberLiteral):
            return rhs
        return lhs
    if isinstance(node, pq.Call):
        if node.func.name in ("label_replace", "label_join"):
            return None
        vectors = [output_labels(arg, catalogue) for arg in _children(node)]
        known = [v for v in vectors if v is not None]
        labels = known[-1] if known else (set() if not vectors else None)
        if labels is not None and node.func.name == "histogram_quantile":
            labels = labels - {"le"}
        return labels
    if isinstance(node, pq.NumberLiteral | pq.StringLiteral):
        return set()
    children = _children(node)
    return output_labels(children[0], catalogue) if children else None


def problems(expr: str, catalogue: dict[str, Any]) -> list[str]:
    """What is wrong with this expression against the catalogue; [] when nothing."""
    try:
        tree = pq.parse(without_grafana_variables(expr))
    except (ValueError, RuntimeError) as exc:
        return [f"does not parse: {exc}"]
    found: list[str] = []
    used_labels: set[str] = set(TARGET_LABELS)
    for selector in selectors(tree):
        if selector.metric is None:
            found.append("a selector without a metric name")
            continue
        labels = series_labels(selector.metric, catalogue)
        if labels is None and selector.metric in catalogue["metrics"]:
            found.append(f"{selector.metric} is a histogram: select its _bucket, _sum or _count")
            continue
        if labels is None:
            found.append(f"metric {selector.metric} is not in the catalogue")
            continue
        used_labels |= labels
        spec = catalogue["metrics"].get(base_metric(selector.metric, catalogue), {})
        for label, op, value in selector.matchers:
            if label not in labels:
                found.append(f"{selector.metric} has no label {label!r}")
                continue
            allowed = spec.get("labels", {}).get(label, {}).get("values")
            if allowed is None or VARIABLE_VALUE in value:
                continue
            wanted = value.split("|") if op in ("Re", "NotRe") else [value]
            unknown = [v for v in wanted if v not in allowed]
            if unknown:
                found.append(f"{selector.metric}{{{label}}} never takes {unknown}")
    for label in sorted(grouping_labels(tree) - used_labels):
        found.append(f"groups by {label!r}, which none of its series has")
    return found
