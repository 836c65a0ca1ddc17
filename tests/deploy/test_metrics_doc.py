"""docs/metrics.md is the catalogue's, word for word."""

from __future__ import annotations

import copy

from .metrics_doc import PAGE, render
from .support import catalogue


def test_the_committed_reference_is_generated_from_the_catalogue() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(catalogue()), (
        "docs/metrics.md differs from deploy/metrics.yaml: run `make metrics-doc`"
    )


def test_a_changed_catalogue_changes_the_reference() -> None:
    changed = copy.deepcopy(catalogue())
    changed["metrics"]["webhook_consumer_attempts_total"]["labels"]["result"]["values"].append(
        "teapot"
    )
    assert render(changed) != render(catalogue())
    assert "`teapot`" in render(changed)


def test_every_metric_and_label_is_documented() -> None:
    page = render(catalogue())
    for name, spec in catalogue()["metrics"].items():
        assert f"\n## {name}\n" in page
        for label in spec.get("labels") or {}:
            assert f"| `{label}` |" in page
