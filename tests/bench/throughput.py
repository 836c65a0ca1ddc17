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

from redis.asyncio import Redis

from consumer.attributes import open_store
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

USERS = 1000  # distinct users among the events, each with attributes in the store


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench(
    bootstrap: str, events: int, channels: int, redis_url: str | None
) -> dict[str, object]:
    receiver = Receiver({})
    await receiver.start()
    names = [f"ch{i}" for i in range(channels)]
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(
            bootstrap,
            receiver,
            [channel(receiver, n) for n in names],
            {"c": names},
            tmp=tmp,
            redis_url=redis_url,
        )
        config = write_config(setup, Path(tmp))
        store = open_store(setup.config().attributes)
        await store.put_many([(f"u-{i}", {"hobby": f"h{i}"}) for i in range(USERS)])
        await store.close()
        await create_topic(bootstrap, setup.topic, 3)
        await produce(
            bootstrap, setup.topic, encoded(event("c", f"u-{i % USERS}") for i in range(events))
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
            cpu = _cpu_seconds(service.pid)
        finally:
            service.send_signal(signal.SIGTERM)
            await service.wait()
            if redis_url is not None:
                await _drop_keys(redis_url, setup.attributes["key_prefix"])
    await receiver.stop()
    return {
        "events": events,
        "channels": channels,
        "attributes": setup.attributes["backend"],
        "deliveries": len(receiver.received),
        "all_delivered": done,
        "all_verified": all(r.verified for r in receiver.received),
        "wall_seconds": round(elapsed, 2),
        "deliveries_per_second_steady": round(steady),
        "service_peak_rss_mib": round(rss, 1),
        # From the start of the process, start-up included: steadier than wall time on a
        # machine shared with other work.
        "service_cpu_us_per_delivery": round(cpu / max(1, len(receiver.received)) * 1e6, 1),
    }


async def _drop_keys(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--channels", type=int, default=3)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    # Attributes in Redis when make bench provides one (deploy/local/with-services), else SQLite.
    redis_url = os.environ.get("REDIS_URL") or None
    print(json.dumps(asyncio.run(bench(bootstrap, args.events, args.channels, redis_url))))


if __name__ == "__main__":
    main()
