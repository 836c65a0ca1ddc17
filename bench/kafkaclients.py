"""aiokafka beside confluent-kafka's asyncio consumer (`confluent_kafka.aio.AIOConsumer`), each
measured process on uvloop, in alternating runs; prints a JSON document and a table.

    nice -n 10 python -m bench.kafkaclients [--runs 3] [--records N] [--rate R] [--seconds S]
        [--cases bulk,paced] [--confluent librdkafka.setting=value ...]

- bulk: a pre-loaded topic (S1's ~300-byte records, 6 partitions) read from its beginning,
  assigned (no group), nothing done per record: records/s from the first record to the last,
  CPU seconds per 1,000 from the assign to the last record (librdkafka prefetches before its
  first record is taken), the time to the first record and the longest gap between two batches.
- paced: a producer process writes `--rate` stamped records/s for `--seconds` into a fresh
  6-partition topic while the consumer is assigned those 6 plus 48 empty partitions (8 topics,
  like the service's delay topics); the consumer's CPU per second over the window from its first
  record to its last, produce->consume latency (the producer's time.time() in the value; both
  processes share the clock), and its CPU per second while nothing arrives ("idle"). The
  `-paused` variants pause the 48 empty partitions.

CPU is the measured process's own (`time.process_time`: every thread, librdkafka's included).
Both clients fetch with fetch.wait.max.ms 500 and fetch.min.bytes 1 (aiokafka's defaults) and are
read as the service's listener reads: at most 500 records a call, back after 100 ms when nothing
came (aiokafka: getmany; AIOConsumer: poll(0.1) for the first record, then consume(499, 0) for
what is already queued, each a hop to its thread pool). librdkafka's other settings are its
defaults (it prefetches up to queued.min.messages=100,000 records per partition).
Needs confluent-kafka: pip install -e '.[kafkaclients]'. Topics are named ckbench-<time>-* and
deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .kafka import create_topic, delete_topics, paced, preload
from .workload import events

PARTITIONS = 6
IDLE_TOPICS = 8  # 48 empty partitions, as many as the default retry schedule's delay topics
BATCH = 500  # the service's max_poll_records
WAIT = 0.1  # seconds; the listener's getmany timeout
FETCH_WAIT_MS = 500
END = b"end "  # the producer's last record: "end <records sent before it>"
BULK = ("aiokafka", "confluent")
PACED = ("aiokafka", "confluent", "aiokafka-paused", "confluent-paused")


class Aiokafka:
    value: Callable[[Any], bytes] = operator.attrgetter("value")

    def __init__(self, bootstrap: str) -> None:
        from aiokafka import AIOKafkaConsumer

        # fetch_max_wait_ms=500 and fetch_min_bytes=1 are its defaults.
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def start(self) -> None:
        await self.consumer.start()

    async def assign(self, busy: list[tuple[str, int]], idle: list[tuple[str, int]]) -> None:
        from aiokafka import TopicPartition

        parts = [TopicPartition(t, p) for t, p in busy + idle]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)
        self.idle = parts[len(busy) :]

    async def pause(self) -> None:
        self.consumer.pause(*self.idle)

    async def take(self) -> list[list[Any]]:
        return list(
            (await self.consumer.getmany(timeout_ms=int(WAIT * 1000), max_records=BATCH)).values()
        )

    async def stop(self) -> None:
        from consumer.kafkatools import stop_consumer

        await stop_consumer(self.consumer)


class Confluent:
    def __init__(self, bootstrap: str, overrides: dict[str, str]) -> None:
        from confluent_kafka.aio import AIOConsumer

        self.consumer = AIOConsumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"ckbench-{os.getpid()}",  # required; assign() never joins it
                "enable.auto.commit": False,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                "fetch.min.bytes": 1,
                **overrides,
            }
        )

    @staticmethod
    def value(message: Any) -> bytes:
        if message.error() is not None:
            raise RuntimeError(f"confluent-kafka: {message.error()}")
        return message.value()  # type: ignore[no-any-return]

    async def start(self) -> None:
        pass  # the constructor started librdkafka's threads

    async def assign(self, busy: list[tuple[str, int]], idle: list[tuple[str, int]]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t, p in busy + idle]
        await self.consumer.assign(parts)
        self.idle = parts[len(busy) :]

    async def pause(self) -> None:
        await self.consumer.pause(self.idle)

    async def take(self) -> list[list[Any]]:
        first = await self.consumer.poll(WAIT)  # back as soon as one record is queued
        if first is None:
            return []
        return [[first, *await self.consumer.consume(BATCH - 1, 0)]]

    async def stop(self) -> None:
        await self.consumer.close()


def _reader(spec: dict[str, Any]) -> Aiokafka | Confluent:
    if spec["client"].startswith("confluent"):
        return Confluent(spec["bootstrap"], spec["confluent"])
    return Aiokafka(spec["bootstrap"])


def _parts(topics: list[str]) -> list[tuple[str, int]]:
    return [(t, p) for t in topics for p in range(PARTITIONS)]


def _status(field: str) -> int:
    """A number from /proc/self/status (VmHWM is reset by exec; ru_maxrss is not)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _rss_mib() -> float:
    return _status("VmHWM") / 1024


async def consume_bulk(spec: dict[str, Any]) -> dict[str, Any]:
    reader = _reader(spec)
    await reader.start()
    try:
        cpu0, assigned = time.process_time(), time.monotonic()
        await reader.assign(_parts([spec["topic"]]), [])
        seen, first, last, gap = 0, 0.0, 0.0, 0.0
        while seen < spec["records"]:
            batches = await reader.take()
            if not batches:
                continue
            now = time.monotonic()
            if not seen:
                first = last = now
                first_cpu = time.process_time()
            gap, last = max(gap, now - last), now
            seen += sum(len(batch) for batch in batches)
        cpu = time.process_time()
        return {
            "records": seen,
            "records_per_second": round(seen / (last - first)),
            "cpu_s_per_1000": round(1000 * (cpu - cpu0) / seen, 5),
            "cpu_s_per_1000_from_first_record": round(1000 * (cpu - first_cpu) / seen, 5),
            "first_record_ms": round(1000 * (first - assigned)),
            "longest_gap_ms": round(1000 * gap),  # between two batches: a stalled fetch
            "peak_rss_mib": round(_rss_mib(), 1),
        }
    finally:
        await reader.stop()


async def consume_paced(spec: dict[str, Any]) -> dict[str, Any]:
    reader = _reader(spec)
    value = reader.value
    await reader.start()
    try:
        await reader.assign(_parts([spec["topic"]]), _parts(spec["idle_topics"]))
        if spec["client"].endswith("-paused"):
            await reader.pause()
        loop = asyncio.get_running_loop()
        warm = loop.time() + 1
        while loop.time() < warm:
            await reader.take()
        idle_from, idle_cpu = loop.time(), time.process_time()
        while loop.time() < idle_from + spec["idle_seconds"]:
            await reader.take()
        idle = (time.process_time() - idle_cpu) / (loop.time() - idle_from)
        print("ready", flush=True)
        latencies: list[int] = []
        expected, first, first_cpu = -1, 0.0, 0.0
        while len(latencies) != expected:
            batches = await reader.take()
            now = time.time_ns()
            if batches and not first:
                first, first_cpu = loop.time(), time.process_time()
            for batch in batches:
                for record in batch:
                    data = value(record)
                    if data.startswith(END):
                        expected = int(data[len(END) :])
                    else:
                        latencies.append(now - int(data[:19]))
        seconds, cpu = loop.time() - first, time.process_time() - first_cpu
        latencies.sort()
        return {
            "records": len(latencies),
            "seconds": round(seconds, 2),
            "cpu_s_per_second": round(cpu / seconds, 4),
            "idle_cpu_s_per_second": round(idle, 4),
            "p50_ms": round(latencies[len(latencies) // 2] / 1e6, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] / 1e6, 2),
            "max_ms": round(latencies[-1] / 1e6, 2),
            "peak_rss_mib": round(_rss_mib(), 1),
            "threads": _status("Threads"),
        }
    finally:
        await reader.stop()


async def produce(spec: dict[str, Any]) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    pad = b" " * 280

    def record(i: int) -> tuple[bytes, bytes]:
        return f"u-{i % 10_000}".encode(), b"%019d" % time.time_ns() + pad

    topic = spec["topic"]
    sent = await paced(spec["bootstrap"], topic, spec["rate"], spec["seconds"], record, _ignore)
    producer = AIOKafkaProducer(bootstrap_servers=spec["bootstrap"], acks="all")
    await producer.start()
    try:  # sent after every record was acknowledged, so the consumer finds them all
        await producer.send_and_wait(topic, END + str(sent).encode(), partition=0)
    finally:
        await producer.stop()
    return {"sent": sent}


def _ignore(_i: int, _at: int) -> None:
    pass


async def _child(mode: str, spec: dict[str, Any]) -> asyncio.subprocess.Process:
    argv = [sys.executable, "-m", "bench.kafkaclients", mode, json.dumps(spec)]
    return await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)


async def _result(process: asyncio.subprocess.Process, within: float) -> dict[str, Any]:
    assert process.stdout is not None
    try:
        out = await asyncio.wait_for(process.stdout.read(), within)
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"measured process exited {process.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


async def run_paced(spec: dict[str, Any], rate: int, seconds: float) -> dict[str, Any]:
    await create_topic(spec["bootstrap"], spec["topic"], PARTITIONS)
    consumer = await _child("_consume_paced", spec)
    assert consumer.stdout is not None
    line = await asyncio.wait_for(consumer.stdout.readline(), 60)
    if line.strip() != b"ready":
        consumer.kill()
        raise RuntimeError(f"consumer not ready: {line!r}")
    producer = await _child(
        "_produce", {**spec, "rate": rate, "seconds": seconds, "idle_topics": []}
    )
    sent = await _result(producer, seconds + 60)
    figures = await _result(consumer, 60)
    if figures["records"] != sent["sent"]:
        raise RuntimeError(f"consumed {figures['records']} of {sent['sent']}")
    return figures


def _medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {
        client: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for client, rows in runs.items()
        if rows
    }


def _versions() -> dict[str, str]:
    import confluent_kafka

    found = {name: version(name) for name in ("aiokafka", "confluent-kafka", "uvloop")}
    return {
        "python": platform.python_version(),
        **found,
        "librdkafka": confluent_kafka.libversion()[0],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    prefix = f"ckbench-{time.strftime('%Y%m%dT%H%M%S')}-"
    idle_topics = [f"{prefix}delay-{n}" for n in range(IDLE_TOPICS)]
    overrides = dict(pair.split("=", 1) for pair in args.confluent)
    base = {
        "bootstrap": bootstrap,
        "idle_topics": idle_topics,
        "idle_seconds": 5,
        "confluent": overrides,
    }
    document: dict[str, Any] = {"versions": _versions(), "params": vars(args)}
    document["load_average_at_start"] = os.getloadavg()
    bulk: dict[str, list[dict[str, Any]]] = {client: [] for client in BULK}
    paced_runs: dict[str, list[dict[str, Any]]] = {client: [] for client in PACED}
    try:
        await create_topic(bootstrap, f"{prefix}bulk", PARTITIONS)
        await preload(bootstrap, f"{prefix}bulk", events(args.records))
        for topic in idle_topics:
            await create_topic(bootstrap, topic, PARTITIONS)
        for index in range(args.runs if "bulk" in args.cases else 0):
            for client in BULK if index % 2 == 0 else BULK[::-1]:
                spec = {**base, "client": client, "topic": f"{prefix}bulk", "records": args.records}
                figures = await _result(await _child("_consume_bulk", spec), 300)
                print(f"bulk {index + 1} {client}: {figures}", file=sys.stderr, flush=True)
                bulk[client].append(figures)
        for index in range(args.runs if "paced" in args.cases else 0):
            for client in PACED if index % 2 == 0 else PACED[::-1]:
                spec = {**base, "client": client, "topic": f"{prefix}in-{index}-{client}"}
                figures = await run_paced(spec, args.rate, args.seconds)
                print(f"paced {index + 1} {client}: {figures}", file=sys.stderr, flush=True)
                paced_runs[client].append(figures)
    finally:
        await delete_topics(bootstrap, prefix)
    document["load_average_at_end"] = os.getloadavg()
    document["bulk"] = {"runs": bulk, "median": _medians(bulk)}
    document["paced"] = {"runs": paced_runs, "median": _medians(paced_runs)}
    return document


def print_table(document: dict[str, Any]) -> None:
    bulk, paced_ = document["bulk"]["median"], document["paced"]["median"]
    print("\nbulk (medians)     records/s  CPU-s/1,000  peak RSS MiB")
    for client, m in bulk.items():
        print(
            f"  {client:16} {m['records_per_second']:>9,.0f}  {m['cpu_s_per_1000']:>11.4f}"
            f"  {m['peak_rss_mib']:>12.0f}"
        )
    print("paced (medians)    CPU-s/s  idle CPU-s/s  p50 ms  p99 ms  peak RSS MiB")
    for client, m in paced_.items():
        print(
            f"  {client:16} {m['cpu_s_per_second']:>7.3f}  {m['idle_cpu_s_per_second']:>12.4f}"
            f"  {m['p50_ms']:>6.1f}  {m['p99_ms']:>6.1f}  {m['peak_rss_mib']:>12.0f}"
        )


def _measured(mode: str, spec: dict[str, Any]) -> None:
    import uvloop

    work = {"_consume_bulk": consume_bulk, "_consume_paced": consume_paced, "_produce": produce}
    print(json.dumps(uvloop.run(work[mode](spec))), flush=True)


def cli() -> None:
    if len(sys.argv) == 3 and sys.argv[1].startswith("_"):
        _measured(sys.argv[1], json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.kafkaclients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per client and case")
    parser.add_argument("--records", type=int, default=200_000, help="bulk topic size")
    parser.add_argument("--rate", type=int, default=500, help="paced records per second")
    parser.add_argument("--seconds", type=float, default=30, help="paced duration")
    parser.add_argument(
        "--cases", type=lambda v: v.split(","), default=["bulk", "paced"], help="bulk,paced"
    )
    parser.add_argument(
        "--confluent",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting for the confluent runs (repeatable)",
    )
    args = parser.parse_args()
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        sys.exit("needs confluent-kafka: pip install -e '.[kafkaclients]'")
    document = asyncio.run(main(args))
    print(json.dumps(document, indent=2))
    print_table(document)


if __name__ == "__main__":
    cli()
