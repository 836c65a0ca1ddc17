"""The figures as JSON, a terminal table, the ratios, and a PNG of the scenarios side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

GROWINGIO_USERS_PER_SECOND = 1000  # GrowingIO's documented webhook push rate


def _find(results: Sequence[dict[str, Any]], scenario: str) -> dict[str, Any]:
    for result in results:
        if result["scenario"] == scenario and "error" not in result:
            return dict(result["figures"])
    return {}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _throughput(figures: dict[str, Any]) -> float | None:
    return figures.get("deliveries_per_second") or figures.get("records_per_second")


def headline(figures: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(count, per second, CPU seconds per 1,000, per CPU-second) of a scenario, in its unit:
    user-events for S2, healthy deliveries for S4, records for S0b, deliveries otherwise."""
    if "user_events" in figures:
        return (
            figures["user_events"],
            figures["user_events_per_second"],
            figures["cpu_seconds_per_1000_user_events"],
            figures["user_events_per_cpu_second"],
        )
    count = figures.get("deliveries") or figures.get("records")
    rate = figures.get("healthy_deliveries_per_second") or _throughput(figures)
    return (
        count,
        rate,
        figures.get("cpu_seconds_per_1000"),
        figures.get("deliveries_per_cpu_second"),
    )


def ratios(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    s1 = _find(results, "S1/1w")
    s0a, s0c = _find(results, "S0a"), _find(results, "S0c")
    s2, s4 = _find(results, "S2"), _find(results, "S4")
    out: dict[str, Any] = {
        "S1/S0a deliveries per second": _ratio(
            s1.get("deliveries_per_second"), s0a.get("deliveries_per_second")
        ),
        "S1/S0a deliveries per CPU-second": _ratio(
            s1.get("deliveries_per_cpu_second"), s0a.get("deliveries_per_cpu_second")
        ),
        "S1/S0c deliveries per CPU-second": _ratio(
            s1.get("deliveries_per_cpu_second"), s0c.get("deliveries_per_cpu_second")
        ),
        "S0c/S0a requests per CPU-second (lean transport / stock aiohttp)": _ratio(
            s0c.get("deliveries_per_cpu_second"), s0a.get("deliveries_per_cpu_second")
        ),
        "S4/S1 healthy deliveries per second (to last receipt)": _ratio(
            s4.get("healthy_deliveries_per_second"),
            s1.get("deliveries_per_second_to_last_receipt"),
        ),
        "S4-f500/S1/1w-f500 healthy deliveries per second (to last receipt)": _ratio(
            _find(results, "S4-f500").get("healthy_deliveries_per_second"),
            _find(results, "S1/1w-f500").get("deliveries_per_second_to_last_receipt"),
        ),
        "S1/2w over S1/1w deliveries per second": _ratio(
            _find(results, "S1/2w").get("deliveries_per_second"), s1.get("deliveries_per_second")
        ),
    }
    for peer in ("S5", "S6a", "S6b"):
        figures = _find(results, peer)
        out[f"S1/{peer} deliveries per second"] = _ratio(
            s1.get("deliveries_per_second"), figures.get("deliveries_per_second")
        )
        out[f"S1/{peer} deliveries per CPU-second"] = _ratio(
            s1.get("deliveries_per_cpu_second"), figures.get("deliveries_per_cpu_second")
        )
    out["S2 events per second per channel / GrowingIO 1,000 users/s"] = _ratio(
        s2.get("events_per_second_per_channel"), GROWINGIO_USERS_PER_SECOND
    )
    s8 = _find(results, "S8")
    out["S8 ordering per_user/none deliveries per second (10,000 users)"] = s8.get(
        "per_user_over_none"
    )
    return out


def write(document: dict[str, Any], stem: Path) -> list[Path]:
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    written = [json_path]
    png = _plot(document, stem.with_suffix(".png"))
    if png is not None:
        written.append(png)
    return written


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _stack(result: dict[str, Any]) -> str:
    params = result.get("params", {})
    return " / ".join(str(params.get(k) or "-") for k in ("http_client", "loop"))


def print_table(document: dict[str, Any]) -> None:
    console = Console(highlight=False, width=160)
    table = Table(title=f"make bench ({document['mode']}, {document['wall_seconds']} s)")
    for column in (
        "scenario",
        "what",
        "count",
        "per second",
        "CPU s / 1000",
        "per CPU-second",
        "start-up s",
        "peak RSS MiB",
        "client / loop",
        "notes",
    ):
        table.add_column(
            column, justify="left" if column in ("scenario", "what", "notes") else "right"
        )
    for result in document["results"]:
        f = result["figures"]
        if "error" in result:
            table.add_row(
                result["scenario"], "failed", "", "", "", "", "", "", "", result["error"][:60]
            )
            continue
        if result["scenario"] == "S3":
            for phase, values in f.items():
                if not isinstance(values, dict):
                    continue
                note = (
                    f"p50 {_cell(values.get('latency_ms_p50'))} ms, "
                    f"p99 {_cell(values.get('latency_ms_p99'))} ms, "
                    f"max {_cell(values.get('latency_ms_max'))} ms"
                    if "latency_ms_p50" in values
                    else ""
                )
                table.add_row(
                    "S3",
                    f"latency, {phase}",
                    _cell(values.get("received")),
                    _cell(values.get("achieved_rate")),
                    "",
                    "",
                    "",
                    _cell(f.get("peak_rss_mib")),
                    _stack(result),
                    f"CPU {values['cpu_seconds_per_second']:.3f} s/s; {note}",
                )
            continue
        count, rate, cpu_per_1000, per_cpu = headline(f)
        notes = []
        if f.get("duplicates"):
            notes.append(f"duplicates {f['duplicates']}")
        if f.get("delay_records") and "hang_requests" not in f:
            notes.append(f"parked {f['delay_records']}")
        if "users_per_request" in f:
            notes.append(f"{f['users_per_request']} users/request")
        if "per_user_over_none" in f:
            runs = ", ".join(
                f"{r['ordering']} {_cell(r['deliveries_per_second_to_last_receipt'])}"
                for r in f["runs"]
            )
            notes.append(f"{f['per_user_over_none']} of none ({runs})")
        if "hang_requests" in f:
            notes.append(
                f"hang {f['hang_requests']} req, 503 {f['fail_requests']} req, "
                f"delayed {f['delay_records']}, commit {f['window_seconds']} s"
            )
        if f.get("summary"):
            notes.append(f["summary"])
        if f.get("complete") is False:
            notes.append("INCOMPLETE")
        table.add_row(
            result["scenario"],
            result["title"],
            _cell(count),
            _cell(rate),
            _cell(cpu_per_1000),
            _cell(per_cpu),
            _cell(f.get("startup_seconds")),
            _cell(f.get("peak_rss_mib")),
            _stack(result),
            "; ".join(notes),
        )
    console.print(table)
    ratios_table = Table(title="ratios")
    ratios_table.add_column("ratio")
    ratios_table.add_column("value", justify="right")
    for name, value in document["ratios"].items():
        ratios_table.add_row(name, _cell(value))
    console.print(ratios_table)


def _plot(document: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the `bench` extra is not installed: the JSON and table still are
        return None
    results = [r for r in document["results"] if "error" not in r and r["scenario"] != "S3"]
    names = [r["scenario"] for r in results]
    rates = [headline(r["figures"])[1] or 0 for r in results]
    cpu = [headline(r["figures"])[2] or 0 for r in results]
    figure, axes = plt.subplots(1, 3, figsize=(17, 5))
    bars = axes[0].bar(names, rates, color="tab:blue")
    axes[0].bar_label(bars, labels=[f"{r:,.0f}" for r in rates], fontsize=7)
    if any(r > 0 for r in rates):  # a log axis needs a positive value (`--only S3` has none)
        axes[0].set_yscale("log")
    axes[0].set_title("per second, log scale (S2: user-events, S4: healthy, S0b: records)")
    bars = axes[1].bar(names, cpu, color="tab:orange")
    axes[1].bar_label(bars, labels=[f"{c:.3f}" for c in cpu], fontsize=7)
    axes[1].set_title("CPU seconds per 1,000")
    for ax in axes[:2]:
        ax.tick_params(axis="x", rotation=45)
    s3 = next((r for r in document["results"] if r["scenario"] == "S3" and "error" not in r), None)
    if s3 is not None:
        phases = {
            k: v for k, v in s3["figures"].items() if isinstance(v, dict) and "latency_ms_p50" in v
        }
        x = range(len(phases))
        width = 0.25
        for i, key in enumerate(("latency_ms_p50", "latency_ms_p99", "latency_ms_max")):
            axes[2].bar(
                [p + i * width for p in x],
                [v[key] or 0 for v in phases.values()],
                width,
                label=key.removeprefix("latency_ms_"),
            )
        axes[2].set_xticks([p + width for p in x], list(phases))
        axes[2].set_yscale("log")
        axes[2].set_title("S3 produce -> receipt latency, ms")
        axes[2].legend()
    figure.suptitle(f"webhook-consumer bench {document['started']} ({document['mode']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
