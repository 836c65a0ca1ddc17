"""docs/metrics.md, generated from the metric catalogue (deploy/metrics.yaml).

    python -m tests.deploy.metrics_doc      # or: make metrics-doc

tests/deploy/test_metrics_doc.py fails when the committed page and the catalogue disagree.
"""

from __future__ import annotations

from typing import Any

from .support import REPO, catalogue

PAGE = REPO / "docs" / "metrics.md"


def render(data: dict[str, Any]) -> str:
    sources: dict[str, str] = data.get("sources", {})
    metrics: dict[str, Any] = data["metrics"]
    lines = [
        "# Metrics reference",
        "",
        "<!-- Generated from deploy/metrics.yaml by `make metrics-doc`; do not edit by hand. -->",
        "",
        "What `webhook-consumer run` exports at `/metrics` on the admin port "
        "(see [Operating it](operating.md)), as listed in "
        "[`deploy/metrics.yaml`](../deploy/metrics.yaml). Every label holds a closed set of "
        "values or a bounded source below: never an id or a URL. The process also exports the "
        "standard `process_*` and `python_*` metrics of the Prometheus client.",
        "",
        "| metric | type | labels |",
        "|---|---|---|",
    ]
    for name, spec in metrics.items():
        labels = ", ".join(f"`{label}`" for label in spec.get("labels") or {}) or "–"
        lines.append(f"| [`{name}`](#{name}) | {spec['type']} | {labels} |")
    lines += ["", "## Label sources", "", "| source | holds |", "|---|---|"]
    lines += [f"| `{source}` | {text} |" for source, text in sources.items()]
    for name, spec in metrics.items():
        lines += ["", f"## {name}", "", f"{spec['type'].capitalize()}. {spec['help']}", ""]
        labels = spec.get("labels") or {}
        if not labels:
            lines.append("No labels.")
            continue
        lines += ["| label | values |", "|---|---|"]
        for label, rule in labels.items():
            if "values" in rule:
                held = ", ".join(f"`{v}`" for v in rule["values"])
            else:
                held = f"{sources[rule['source']]} (source `{rule['source']}`)"
            lines.append(f"| `{label}` | {held} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    PAGE.write_text(render(catalogue()), encoding="utf-8")
    print(PAGE.relative_to(REPO))


if __name__ == "__main__":
    main()
