"""`make bench`: end-to-end throughput and memory of `webhook-consumer run` on a real Kafka.

The service runs as its own process (as in production); this process produces the events and
runs the verifying receiver. Prints one JSON line of figures; nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from consumer.receiver import Receiver
from tests.integration.support import (
    Setup,
    channel,
    create_topic,
    encoded,
    event,
    produce,
    write_config,
)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench(bootstrap: str, events: int, channels: int) -> dict[str, object]:
    receiver = Receiver({})
    await receiver.start()
    names = [f"ch{i}" for i in range(channels)]
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(
            bootstrap, receiver, [channel(receiver, n) for n in names], {"c": names}, tmp=tmp
        )
        config = write_config(setup, Path(tmp))
        await create_topic(bootstrap, setup.topic, 3)
        await produce(
            bootstrap, setup.topic, encoded(event("c", f"u-{i % 1000}") for i in range(events))
        )
        expected = events * channels
        started = time.monotonic()
        service = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--config",
            str(config),
            env={**os.environ, **setup.environ},
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            done = await receiver.wait_for(lambda r: len(r.received) >= expected, within=600)
            elapsed = time.monotonic() - started
            # The first delivery marks the end of start-up (group join, topic metadata).
            first = min(r.at for r in receiver.received)
            steady = (expected - 1) / (max(r.at for r in receiver.received) - first)
            rss = _peak_rss_mib(service.pid)
        finally:
            service.send_signal(signal.SIGTERM)
            await service.wait()
    await receiver.stop()
    return {
        "events": events,
        "channels": channels,
        "deliveries": len(receiver.received),
        "all_delivered": done,
        "all_verified": all(r.verified for r in receiver.received),
        "wall_seconds": round(elapsed, 2),
        "deliveries_per_second_steady": round(steady),
        "service_peak_rss_mib": round(rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=3)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    print(json.dumps(asyncio.run(bench(bootstrap, args.events, args.channels))))


if __name__ == "__main__":
    main()
