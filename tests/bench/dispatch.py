"""`python -m tests.bench.dispatch [plain|traced]`: CPU per record of `Dispatcher.dispatch`
(three channels, batches of 500) and per request of `Sender.prepare`, records without headers
or each with a W3C traceparent. Prints one JSON line, asserts nothing; runs against any
checkout first on sys.path, so the same file measures the code before and after a change."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson

from consumer.attributes import MemoryAttributeStore
from consumer.catalog import Catalog
from consumer.config import parse_config
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.dispatcher import Dispatcher
from consumer.sender import Sender
from tests.transports import open_client

CHANNELS = ("a", "b", "c")
CONFIG = parse_config(
    {
        "allowed_networks": ["127.0.0.0/8"],
        "channels": [
            {
                "name": name,
                "url": f"http://127.0.0.1:9/{name}",
                "template_params": {"t": "string"},
                "user_attributes": ["hobby"],
            }
            for name in CHANNELS
        ],
        "campaigns": [{"id": "c", "channels": list(CHANNELS), "template_params": {"t": "x"}}],
    },
    "bench",
    {},
)
CATALOG = Catalog.from_config(CONFIG, {})


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    key: bytes = b""


class Lane:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def submit(self, delivery: Any) -> None:
        self.got.append(delivery)

    def hold_for(self) -> float | None:
        return None


class Owner:
    revoked = False

    def finished(self, offset: int) -> None:
        pass


def records(count: int, traced: bool) -> list[Record]:
    out = []
    for i in range(count):
        value = orjson.dumps(
            {
                "event_id": f"e{i}",
                "user_id": f"u{i % 1000}",
                "campaign_id": "c",
                "occurred_at": "2026-11-11T00:00:05.123Z",
            }
        )
        parent = f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01"
        headers = (("traceparent", parent.encode()),) if traced else ()
        out.append(Record("t", 0, i, value, headers))
    return out


async def bench(traced: bool, count: int = 20_000, rounds: int = 7) -> dict[str, float]:
    store = MemoryAttributeStore()
    await store.put_many([(f"u{i}", {"hobby": "x"}) for i in range(1000)])
    batch = records(count, traced)
    dispatch_us, prepare_us = [], []
    transport = open_client("lean")
    sender = Sender(transport)
    try:
        for _ in range(rounds):
            lanes = {name: Lane() for name in CATALOG.channels}
            dispatcher = Dispatcher(CATALOG, store, lanes, DeadLetterWriter(MemoryDeadLetterSink()))
            started = time.process_time()
            for i in range(0, count, 500):
                await dispatcher.dispatch(batch[i : i + 500], Owner())
            dispatch_us.append((time.process_time() - started) / count * 1e6)
            deliveries = [d for lane in lanes.values() for d in lane.got]
            for delivery in deliveries:
                delivery.attempts = 1
            started = time.process_time()
            for delivery in deliveries:
                sender.prepare(delivery)
            prepare_us.append((time.process_time() - started) / len(deliveries) * 1e6)
    finally:
        await transport.close()
    return {
        "dispatch_us_per_record": round(min(dispatch_us), 2),
        "dispatch_median": round(statistics.median(dispatch_us), 2),
        "prepare_us_per_request": round(min(prepare_us), 2),
        "prepare_median": round(statistics.median(prepare_us), 2),
    }


def main() -> None:
    traced = len(sys.argv) > 1 and sys.argv[1] == "traced"
    print(json.dumps(asyncio.run(bench(traced))))


if __name__ == "__main__":
    main()
