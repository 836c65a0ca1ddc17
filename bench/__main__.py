"""`make bench`: the service beside its ceilings and the peers users would deploy instead.

    python -m bench [--quick] [--only S1/1w,S3] [--profile]   (--profile: S1/1w and S4)
    python -m bench --only S7a,S7b,S7c,S7d,S7e     # the attributes topic alone

Needs a Kafka broker ($KAFKA_BOOTSTRAP_SERVERS, default 127.0.0.1:9092), Go (the receiver),
Java 17 and Maven (the Kafka Connect peer). Writes bench/results/<timestamp>.json and .png and
prints a table. Nothing here asserts a target: these are figures to watch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import enrichment, ordering, report, scenarios
from .context import QUICK, Bench, Sizes, receiver_for_bench
from .kafka import create_topic, delete_topics, preload
from .measure import Hook, nothing
from .paths import CACHE, RESULTS
from .workload import events, write_attributes

Scenario = Callable[[Bench], Awaitable[scenarios.Result]]
# Run only when named in --only: variants for whoever tunes the service.
EXTRA = {"S1/1w-f500", "S4-f500"}
# The pre-loaded topics each scenario reads; a scenario not listed needs none.
NEEDS = {
    "main": {"S0b", "S1/1w", "S1/2w", "S1/1w-f500", "S2", "S7c"},
    "mid": {"S4", "S4-f500", "S6a", "S6b", "S8"},
    "small": {"S5"},
}


def _scenarios(profile: bool) -> dict[str, Scenario]:
    from .peers import connect, quix
    from .profiling import PySpy

    def spy(bench: Bench, name: str) -> Hook:
        return PySpy(bench, name) if profile else nothing

    return {
        "S0a": lambda b: scenarios.s0_firehose(b, "aiohttp"),
        "S0c": lambda b: scenarios.s0_firehose(b, "lean"),
        "S0b": scenarios.s0b_raw_kafka,
        "S1/1w": lambda b: scenarios.s1_throughput(b, 1, spy(b, "s1-w1")),
        "S1/2w": lambda b: scenarios.s1_throughput(b, 2),
        "S1/1w-f500": lambda b: scenarios.s1_throughput(b, 1, spy(b, "s1-w1-f500"), 500),
        "S2": scenarios.s2_batching,
        "S3": scenarios.s3_latency,
        "S4": lambda b: scenarios.s4_isolation(b, during=spy(b, "s4")),
        "S4-f500": lambda b: scenarios.s4_isolation(b, in_flight=500),
        "S5": scenarios.s5_naive,
        "S8": ordering.s8_ordering,
        "S6a": connect.scenario,
        "S6b": quix.scenario,
        "S7a": lambda b: enrichment.catch_up(b, "sqlite"),
        "S7b": lambda b: enrichment.catch_up(b, "redis"),
        "S7c": enrichment.beside_s1,
        "S7d": lambda b: enrichment.visibility(b, "sqlite"),
        "S7e": lambda b: enrichment.visibility(b, "redis"),
    }


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


async def main(args: argparse.Namespace) -> int:
    sizes: Sizes = QUICK if args.quick else Sizes()
    if args.events:
        sizes = dataclasses.replace(sizes, events=args.events)
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    folder = CACHE / "runs" / stamp
    folder.mkdir(parents=True, exist_ok=True)
    chosen = _scenarios(args.profile)
    wanted = [name for name in chosen if name in args.only or (not args.only and name not in EXTRA)]
    receiver = receiver_for_bench()
    await receiver.start()
    bench = Bench(bootstrap, f"bench-{stamp.lower()}", folder, receiver, sizes)
    results: list[scenarios.Result] = []
    setup: dict[str, float] = {}
    try:
        await write_attributes(bench.db)
        for size in ("main", "mid", "small"):
            if not NEEDS[size] & set(wanted):
                continue  # `--only` left out every scenario that reads it
            topic = bench.topic(size)
            await create_topic(bootstrap, topic.name, sizes.partitions)
            setup[f"preload_{topic.records}_seconds"] = round(
                await preload(bootstrap, topic.name, events(topic.records)), 1
            )
        for name in wanted:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            began = time.monotonic()
            try:
                result = await chosen[name](bench)
            except Exception as exc:  # one broken scenario must not lose the others' figures
                traceback.print_exc()
                result = {
                    "scenario": name,
                    "title": "failed",
                    "params": {},
                    "figures": {},
                    "error": f"{type(exc).__name__}: {exc}",
                }
            result["seconds"] = round(time.monotonic() - began, 1)
            results.append(result)
            print(f"bench: {name} done in {result['seconds']} s", file=sys.stderr, flush=True)
    finally:
        await receiver.stop()
        await delete_topics(bootstrap, bench.prefix)
    document = {
        "started": stamp,
        "mode": "quick" if args.quick else "full",
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": _machine(),
        "bootstrap": bootstrap,
        "sizes": bench.sizes_dict(),
        "setup": setup,
        "results": results,
        "ratios": report.ratios(results),
        "logs": str(folder),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    written = report.write(document, RESULTS / stamp)
    report.print_table(document)
    for path in written:
        print(path)
    return 1 if any("error" in r for r in results) else 0


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument(
        "--only",
        type=lambda s: set(s.split(",")),
        default=set(),
        help="comma-separated scenarios, e.g. S0a,S1/1w,S3",
    )
    parser.add_argument("--events", type=int, help="events in the main topic (S0b, S1, S2)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record S1/1w and S4 with py-spy and print their top costs",
    )
    sys.exit(asyncio.run(main(parser.parse_args())))


if __name__ == "__main__":
    cli()
