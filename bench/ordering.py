"""S8: what `ordering: per_user` costs a healthy stream of 10,000 users, A/B against `none`.

The same pre-loaded topic (the "mid" one: every event of user `u-<i % 10,000>`), three
channels, one worker, run alternately without and with per-user order: A B B A A B, so a
machine that slows down or speeds up over the scenario weighs on both sides alike. The rate
is the receiver's own clock (first to last receipt, the Go receiver runs in its own process);
the ratio is per_user's median over none's.
"""

from __future__ import annotations

import statistics
from typing import Any

from .context import CONCURRENCY, Bench, healthy_paths
from .scenarios import Result, _records_under, _result, _service_run, _setup
from .workload import CHANNELS, USERS

PAIRS = 3
ORDER = ("none", "per_user", "per_user", "none", "none", "per_user")  # A B B A A B


async def s8_ordering(bench: Bench, pairs: int = PAIRS) -> Result:
    topic = bench.topic("mid")
    expected = topic.records * len(CHANNELS)
    runs: list[dict[str, Any]] = []
    for i, mode in enumerate((ORDER * pairs)[: 2 * pairs]):
        options = {"*": {"ordering": mode}}
        setup = _setup(bench, f"s8-{i}-{mode}", topic, channel_options=options)
        figures = (await _service_run(bench, setup, 1, expected, healthy_paths())).figures()
        # Healthy work parked on the delay path (a backlog over max_backlog_seconds), and
        # the order facts written for it: what the ordered path added to Kafka.
        figures["delay_records"] = await _records_under(bench, f"{setup.group}-retry")
        figures["order_records"] = await _records_under(bench, f"{setup.group}.order")
        runs.append({"ordering": mode, **figures})
    rates = {
        mode: [
            r["deliveries_per_second_to_last_receipt"] or 0.0 for r in runs if r["ordering"] == mode
        ]
        for mode in ("none", "per_user")
    }
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    ordered = [r for r in runs if r["ordering"] == "per_user"]
    middle = sorted(ordered, key=lambda r: r["deliveries_per_second_to_last_receipt"] or 0)[
        len(ordered) // 2
    ]
    figures = {
        # The headline is per_user's median run; none's rates and every run follow.
        **{k: middle[k] for k in ("deliveries", "cpu_seconds_per_1000", "peak_rss_mib")},
        "deliveries_per_second": medians["per_user"],
        "deliveries_per_cpu_second": middle["deliveries_per_cpu_second"],
        "startup_seconds": middle["startup_seconds"],
        "complete": all(r["complete"] for r in runs),
        "duplicates": sum(r["duplicates"] for r in runs),
        "none_deliveries_per_second": medians["none"],
        "per_user_over_none": round(medians["per_user"] / medians["none"], 3)
        if medians["none"]
        else None,
        "runs": [
            {
                "ordering": r["ordering"],
                "deliveries_per_second_to_last_receipt": r["deliveries_per_second_to_last_receipt"],
                "deliveries_per_second": r["deliveries_per_second"],
                "cpu_seconds_per_1000": r["cpu_seconds_per_1000"],
                "delay_records": r["delay_records"],
                "order_records": r["order_records"],
                "complete": r["complete"],
            }
            for r in runs
        ],
    }
    params = {
        "events": topic.records,
        "users": USERS,
        "channels": len(CHANNELS),
        "workers": 1,
        "max_concurrency": CONCURRENCY,
        "order_of_runs": [r["ordering"] for r in runs],
        "rate": "receiver clock, first to last receipt",
    }
    return _result("S8", "service, ordering per_user vs none (A/B)", params, figures)
