"""The metric catalogue (deploy/metrics.yaml), and an exposition checked against it: the unit
tests of the Prometheus hook and the integration tests scraping /metrics share this."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from consumer import __version__

CATALOGUE = Path(__file__).resolve().parents[1] / "deploy" / "metrics.yaml"
PREFIX = "webhook_consumer_"
# Exported only by a replica that follows an attributes topic.
FOLLOWER_METRICS = frozenset(
    PREFIX + name
    for name in (
        "attribute_records_total",
        "attribute_records_skipped_total",
        "attribute_lag_records",
        "attributes_caught_up",
    )
)
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


@cache
def catalogue() -> dict[str, Any]:
    data = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def metrics() -> dict[str, Any]:
    return dict(catalogue()["metrics"])


def allowed_values(metric: str, label: str) -> list[str]:
    return [str(v) for v in metrics()[metric]["labels"][label]["values"]]


@dataclass(frozen=True)
class Bounds:
    """What the bounded sources may hold in one run."""

    channels: Collection[str]
    partitions: Collection[int]
    steps: int  # len(retry.schedule_seconds)

    def allows(self, source: str, value: str) -> bool:
        match source:
            case "channel":
                return value in self.channels
            case "partition":
                return value.isdigit() and int(value) in self.partitions
            case "step":
                return value.isdigit() and 1 <= int(value) <= self.steps
            case "version":
                return value == __version__
        raise AssertionError(f"unknown source {source!r}")


def our_samples(exposition: str) -> list[Sample]:
    return [
        sample
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name.startswith(PREFIX)
    ]


def metric_of(sample_name: str) -> tuple[str | None, str]:
    """The catalogued metric a sample belongs to (None if none), and the sample's suffix."""
    known = metrics()
    if sample_name in known:
        return sample_name, ""
    for suffix in _HISTOGRAM_SUFFIXES:
        base = sample_name.removesuffix(suffix)
        if base != sample_name and known.get(base, {}).get("type") == "histogram":
            return base, suffix
    return None, ""


def problems(exposition: str, bounds: Bounds) -> list[str]:
    """Every webhook_consumer_ sample: a catalogued metric, its labels exactly the catalogue's,
    each value in the allowed set or the bounded source. [] when all is well."""
    found = []
    for sample in our_samples(exposition):
        metric, suffix = metric_of(sample.name)
        if metric is None:
            found.append(f"{sample.name}: not in the catalogue")
            continue
        spec = metrics()[metric].get("labels") or {}
        labels = dict(sample.labels)
        if suffix == "_bucket":
            labels.pop("le", None)
        if set(labels) != set(spec):
            found.append(f"{sample.name}: labels {sorted(labels)}, expected {sorted(spec)}")
            continue
        for label, value in labels.items():
            rule = spec[label]
            if "values" in rule:
                if value not in [str(v) for v in rule["values"]]:
                    found.append(f"{sample.name}{{{label}={value!r}}}: not an allowed value")
            elif not bounds.allows(rule["source"], value):
                found.append(f"{sample.name}{{{label}={value!r}}}: outside {rule['source']}")
    return found


def value(exposition: str, name: str, **labels: str) -> float | None:
    """The value of the sample with exactly these labels, None when absent."""
    for sample in our_samples(exposition):
        if sample.name == name and sample.labels == labels:
            return float(sample.value)
    return None


def exported_metrics(exposition: str) -> set[str]:
    return {m for s in our_samples(exposition) if (m := metric_of(s.name)[0]) is not None}
