"""The service's own hot path in one process, without Kafka: CPU per delivery.

    python -m bench.hotpath [--events 30000] [--rounds 3]

Records as the input topic holds them (S1's events: one campaign, three channels, 10,000
users in SQLite behind the cache) go through the dispatcher, the lanes (with every hook the
service subscribes), the sender and the configured transport to the Go receiver, in batches of
500 per partition under the in-flight bound, on uvloop with the collector tuned as `run`
tunes it. The figure is this process's CPU time (`process_time`) per delivery: other work on a
shared machine shows in wall time far more than in it. What it leaves out is Kafka (fetching,
the commit) and the admin server. Prints one JSON line; runs against whichever checkout of
`consumer` comes first on sys.path, so the same file measures before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from consumer.attributes.backends import cache_for, open_backend
from consumer.catalog import Catalog
from consumer.config import parse_config
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayPath, MemoryDelaySink, delay_levels
from consumer.dispatcher import Dispatcher
from consumer.hooks.logs import RetrySummary, TransitionLog
from consumer.hooks.prometheus import PrometheusHook
from consumer.hooks.readiness import Readiness
from consumer.hooks.status import StatusBoard
from consumer.lanes import ChannelLane
from consumer.observer import Observer
from consumer.sender import Sender
from consumer.transport.backends import open_transport

from .context import receiver_for_bench
from .workload import CHANNELS, ServiceSetup, event, write_attributes

PARTITIONS = 6
BATCH = 500
IN_FLIGHT = 2000  # per partition, the service's default


class Partition:
    """The owner of one partition's records, counting the unfinished ones."""

    revoked = False

    def __init__(self, progress: asyncio.Event) -> None:
        self.unfinished = 0
        self._progress = progress

    def finished(self, offset: int) -> None:
        self.unfinished -= 1
        self._progress.set()


class Record:
    __slots__ = ("headers", "key", "offset", "partition", "topic", "value")

    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset = "bench", partition, offset
        self.value, self.headers, self.key = value, (), None


def hooks(names: list[str]) -> list[Any]:
    out: list[Any] = [TransitionLog(debug=False), RetrySummary()]
    out += [PrometheusHook(names), StatusBoard(names), Readiness()]
    try:
        from consumer.channels import ChannelState
        from consumer.channels.reports import CircuitReports
    except ImportError:
        return out
    return [*out, CircuitReports(ChannelState())]


async def one_round(config: Any, environ: dict[str, str], events: int) -> float:
    """CPU microseconds per delivery of one pass over `events` records."""
    import orjson

    catalog = Catalog.from_config(config, environ)
    names = list(catalog.channels)
    observer = Observer(hooks(names))
    backend = open_backend(config.attributes, environ)
    store = cache_for(backend, config.attributes) or backend
    letters = DeadLetterWriter(MemoryDeadLetterSink())
    delays = DelayPath(MemoryDelaySink(), "bench-retry", delay_levels(config.retry))
    transport = open_transport(config.http, config.allowed_networks)
    sender = Sender(transport)
    lanes = {
        name: ChannelLane(channel, sender, letters, delays, config.retry, observer=observer)
        for name, channel in catalog.channels.items()
    }
    for lane in lanes.values():
        lane.start()
    dispatcher = Dispatcher(catalog, store, lanes, letters, observer)
    progress = asyncio.Event()
    owners = [Partition(progress) for _ in range(PARTITIONS)]
    values = [orjson.dumps(event(i)) for i in range(events)]
    batches = []
    for start in range(0, events, BATCH * PARTITIONS):
        for p in range(PARTITIONS):
            first = start + p * BATCH
            chunk = [Record(p, o, values[o]) for o in range(first, min(first + BATCH, events))]
            if chunk:
                batches.append((p, chunk))
    try:
        started = time.process_time()
        for p, chunk in batches:
            owner = owners[p]
            while owner.unfinished + len(chunk) > IN_FLIGHT:
                progress.clear()
                await progress.wait()
            owner.unfinished += len(chunk)
            await dispatcher.dispatch(chunk, owner)
        while any(o.unfinished for o in owners):
            progress.clear()
            await progress.wait()
        return (time.process_time() - started) / (events * len(names)) * 1e6
    finally:
        await asyncio.gather(*(lane.close() for lane in lanes.values()))
        await transport.close()
        await store.close()
        await delays.close()
        await letters.close()


async def main(events: int, rounds: int, client: str | None) -> dict[str, Any]:
    receiver = receiver_for_bench()
    await receiver.start()
    folder = Path(tempfile.mkdtemp(prefix="hotpath-"))
    db = folder / "attributes.db"
    await write_attributes(db)
    setup = ServiceSetup("127.0.0.1:9", "hotpath", "hotpath", "t", receiver.base, db)
    setup.http_client = client
    config = parse_config(setup.document(), "hotpath", setup.environ)
    costs = []
    try:
        for _ in range(rounds):
            costs.append(await one_round(config, setup.environ, events))
    finally:
        await receiver.stop()
    return {
        "events": events,
        "deliveries": events * len(CHANNELS),
        "cpu_us_per_delivery": [round(c, 2) for c in costs],
        "best": round(min(costs), 2),
        "median": round(statistics.median(costs), 2),
        "load": os.getloadavg()[0],
    }


def _run(events: int, rounds: int, client: str | None) -> dict[str, Any]:
    from consumer.running import tune_gc

    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main(events, rounds, client))
    return uvloop.run(main(events, rounds, client))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", choices=("lean", "aiohttp"), default=None)
    args = parser.parse_args()
    print(json.dumps(_run(args.events, args.rounds, args.client)))
