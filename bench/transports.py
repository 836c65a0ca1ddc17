"""The HTTP clients alone, in alternating runs: CPU per request of the lean transport and of
stock aiohttp, each on uvloop with the collector tuned, against the Go receiver.

    python -m bench.transports [--runs 3] [--requests 100000]

Each run is one fire-hose process (`bench.firehose`, S0a's and S0c's) sending `--requests`
pre-signed POSTs, each with a fresh delivery id, over 3 paths x 16 connections; CPU is that
process's over the window from the receiver's first request to its last 200. The order
alternates (lean first, then aiohttp first) so that load from elsewhere on a shared machine
falls on both. Needs Go; no broker.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from typing import Any

from .context import CONCURRENCY, healthy_paths, receiver_for_bench
from .measure import run_consumer
from .workload import CHANNELS

CLIENTS = ("lean", "aiohttp")


def _per_request_us(figures: dict[str, Any]) -> float:
    return 1e6 * float(figures["cpu_seconds_window"]) / int(figures["deliveries"])


async def main(runs: int, requests: int) -> int:
    receiver = receiver_for_bench()
    await receiver.start()
    measured: dict[str, list[float]] = {client: [] for client in CLIENTS}
    try:
        for index in range(runs):
            for client in CLIENTS if index % 2 == 0 else CLIENTS[::-1]:
                argv = [sys.executable, "-m", "bench.firehose", receiver.base]
                argv += ["--requests", str(requests)]
                argv += ["--concurrency", str(CONCURRENCY * len(CHANNELS))]
                argv += ["--client", client, "--loop", "uvloop"]
                run = await run_consumer(
                    argv,
                    receiver=receiver,
                    bootstrap="",
                    group=None,
                    topic="",
                    records=0,
                    paths=healthy_paths(),
                    expected_ok=requests,
                    within=600,
                )
                figures = run.figures()
                if not run.complete or figures["exit_code"] != 0:
                    print(f"run {index + 1} {client}: incomplete {figures}", file=sys.stderr)
                    return 1
                us = _per_request_us(figures)
                measured[client].append(us)
                print(
                    f"run {index + 1} {client:7}: {figures['deliveries_per_second']:>9,.0f} "
                    f"requests/s, {figures['cpu_seconds_window']:.2f} CPU-s for "
                    f"{figures['deliveries']:,}: {us:.1f} us per request",
                    flush=True,
                )
    finally:
        await receiver.stop()
    medians = {client: statistics.median(values) for client, values in measured.items()}
    for client, values in measured.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(
            f"{client:7}: median {medians[client]:.1f} us per request, "
            f"{medians[client] / 1000:.4f} CPU-s per 1,000 ({shown})"
        )
    print(f"aiohttp / lean: {medians['aiohttp'] / medians['lean']:.2f}x the CPU per request")
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.transports",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per client")
    parser.add_argument("--requests", type=int, default=100_000, help="requests per run")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.runs, args.requests)))


if __name__ == "__main__":
    cli()
