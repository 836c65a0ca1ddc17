"""S7: the attributes topic. Catching up on 1,000,000 users (SQLite, Redis), updates applied
beside S1's deliveries, and the time from an update's produce to its visibility.

Every figure comes from outside the service: its admin port (/metrics, /readyz), its log line
`attributes.caught_up`, /proc for CPU and memory, and the store itself (the SQLite file, or a
Redis of this run's own) for visibility.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .context import Bench, healthy_paths
from .kafka import admin_client, create_topic, paced, preload
from .measure import Run, run_consumer
from .procstat import TreeMeter
from .workload import CHANNELS, USERS, ServiceSetup, attributes

Result = dict[str, Any]
POLL = 0.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def user_records(count: int, salt: str = "") -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of `count` users, each the size of a typical attribute object."""
    for i in range(count):
        value = {**attributes(i), "tier": ("gold", "silver", "bronze")[i % 3], "v": salt}
        yield f"u-{i}".encode(), orjson.dumps(value)


async def create_compacted(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import NewTopic

    async with admin_client(bootstrap) as admin:
        new = NewTopic(topic, partitions, 1, topic_configs={"cleanup.policy": "compact"})
        await admin.create_topics([new])


@dataclass
class PrivateRedis:
    """A redis-server of this run's own: its memory is the store's size, nobody else's keys."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def used_memory_mib(self) -> float:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "info", "memory"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1]) / 2**20
        raise RuntimeError("redis INFO has no used_memory")


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("S7b needs redis-server on PATH")
    port = free_port()
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)  # polling for the server to answer, with a deadline
        yield PrivateRedis(port, process)
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def setup_for(
    bench: Bench, name: str, input_topic: str, attributes_topic: str, store: dict[str, Any]
) -> tuple[ServiceSetup, int]:
    port = free_port()
    setup = ServiceSetup(
        bench.bootstrap,
        bench.prefix,
        name,
        input_topic,
        bench.receiver.base,
        bench.db,
        attributes={**store, "topic": attributes_topic},
        admin={"host": "127.0.0.1", "port": port},
        log_level="info",
    )
    return setup, port


async def metrics(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """The follower's numbers from /metrics; empty while the admin port does not answer."""
    try:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("webhook_consumer_attribute"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def applied(found: dict[str, float]) -> float:
    """Records of the attributes topic read so far (stored, deleted, superseded or skipped)."""
    return sum(
        v for k, v in found.items() if k.startswith("webhook_consumer_attribute_records_total")
    )


def caught_up_line(log: Path) -> dict[str, Any] | None:
    """The service's own `attributes.caught_up` log line (records, seconds)."""
    if not log.exists():
        return None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"attributes.caught_up"' in line:
            with contextlib.suppress(ValueError):
                data: dict[str, Any] = json.loads(line)
                return data
    return None


async def catch_up(bench: Bench, backend: str) -> Result:
    """S7a (SQLite) and S7b (Redis): a replica starting on a topic of N users."""
    users = bench.sizes.attribute_users
    name = f"s7-catch-up-{backend}"
    topic = f"{bench.prefix}-{name}-attributes"
    input_topic = f"{bench.prefix}-{name}-events"
    await create_compacted(bench.bootstrap, topic, bench.sizes.partitions)
    await create_topic(bench.bootstrap, input_topic, bench.sizes.partitions)
    preload_seconds = await preload(bench.bootstrap, topic, list(user_records(users)))
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            db = bench.folder / f"{name}.db"
            store: dict[str, Any] = {"backend": "sqlite", "url": f"sqlite:///{db}"}
        else:
            redis = stack.enter_context(private_redis())
            store = {"backend": "redis", "url": redis.url}
            memory_before = redis.used_memory_mib()
        setup, port = setup_for(bench, name, input_topic, topic, store)
        config = setup.write(bench.folder)
        log = bench.log(name)
        measured = await _until_caught_up(bench, setup, config, port, log)
        if backend == "sqlite":
            size = (
                sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.exists()) / 2**20
            )
            store_figure = {"file_mib": round(size, 1)}
        else:
            store_figure = {
                "redis_used_memory_mib": round(redis.used_memory_mib() - memory_before, 1)
            }
    line = caught_up_line(log) or {}
    seconds = line.get("seconds") or measured["caught_up_seconds"]
    figures = {
        "records": users,
        "records_per_second": round(users / seconds, 1) if seconds else None,
        "catch_up_seconds": seconds,
        "ready_seconds_from_launch": measured["ready_seconds"],
        "cpu_seconds": measured["cpu_seconds"],
        "peak_rss_mib": measured["peak_rss_mib"],
        **store_figure,
        "preload_seconds": round(preload_seconds, 1),
    }
    size_note = (
        f"file {store_figure['file_mib']} MiB"
        if "file_mib" in store_figure
        else f"Redis memory {store_figure['redis_used_memory_mib']} MiB"
    )
    figures["summary"] = f"caught up in {seconds} s; {size_note}"
    params = {"users": users, "partitions": bench.sizes.partitions, "backend": backend}
    title = f"catch-up of {users:,} users into {'SQLite' if backend == 'sqlite' else 'Redis'}"
    return {
        "scenario": "S7a" if backend == "sqlite" else "S7b",
        "title": title,
        "params": params,
        "figures": figures,
    }


async def _until_caught_up(
    bench: Bench, setup: ServiceSetup, config: Path, port: int, log: Path
) -> dict[str, Any]:
    launched = time.monotonic()
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            *bench.service(config),
            env={**os.environ, **setup.environ},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    meter = TreeMeter(process.pid)
    ready = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            deadline = launched + bench.sizes.timeout
            while time.monotonic() < deadline and process.returncode is None:
                meter.sample()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            ready = time.monotonic() - launched
                            break
                await asyncio.sleep(POLL)
        cpu = meter.sample()
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 120)
    if ready is None:
        raise RuntimeError(f"{setup.name}: never ready (see {log})")
    return {
        "ready_seconds": round(ready, 1),
        "caught_up_seconds": round(ready, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_mib": round(meter.peak_rss_mib, 1),
    }


async def beside_s1(bench: Bench) -> Result:
    """S7c: S1 (3 channels, the main topic) while the follower takes a burst of updates."""
    topic = bench.topic("main")
    updates = bench.sizes.attribute_updates
    attributes_topic = f"{bench.prefix}-s7c-attributes"
    await create_compacted(bench.bootstrap, attributes_topic, bench.sizes.partitions)
    store = {"backend": "sqlite", "url": f"sqlite:///{bench.db}"}
    setup, port = setup_for(bench, "s7c", topic.name, attributes_topic, store)
    setup.log_level = "warning"
    config = setup.write(bench.folder)
    burst: dict[str, float] = {}

    @contextlib.asynccontextmanager
    async def during(_pid: int) -> AsyncIterator[None]:
        task = asyncio.create_task(_burst(bench, attributes_topic, port, updates, burst))
        try:
            yield
        finally:
            with contextlib.suppress(TimeoutError):  # let it finish if it is close
                await asyncio.wait_for(asyncio.shield(task), 60)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    from .kafka import end_offsets

    run: Run = await run_consumer(
        bench.service(config),
        env=setup.environ,
        receiver=bench.receiver,
        bootstrap=bench.bootstrap,
        group=setup.group,
        topic=setup.topic,
        records=await end_offsets(bench.bootstrap, setup.topic),
        paths=healthy_paths(),
        expected_ok=topic.records * len(CHANNELS),
        within=bench.sizes.timeout,
        log=bench.log("s7c"),
        during=during,
    )
    figures = run.figures()
    seconds = burst.get("applied_seconds")
    figures.update(
        updates=updates,
        updates_produced_seconds=burst.get("produced_seconds"),
        updates_applied_seconds=seconds,
        updates_applied_per_second=round(updates / seconds, 1) if seconds else None,
        updates_max_lag=burst.get("max_lag"),
        summary=(
            f"{updates:,} updates applied at {updates / seconds:,.0f}/s beside the deliveries"
            if seconds
            else "the updates were not all applied within the run"
        ),
    )
    params = {
        "events": topic.records,
        "channels": len(CHANNELS),
        "updates": updates,
        "store": "sqlite",
    }
    return {
        "scenario": "S7c",
        "title": "S1 beside a burst of attribute updates",
        "params": params,
        "figures": figures,
    }


async def _burst(bench: Bench, topic: str, port: int, count: int, out: dict[str, float]) -> None:
    """Produce `count` updates at once, then poll /metrics until the follower read them all."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        before = applied(await metrics(http, port))
        started = time.monotonic()
        # Distinct users, the first USERS of them those S1's events name.
        records = list(user_records(count, salt="burst"))
        out["produced_seconds"] = round(await preload(bench.bootstrap, topic, records), 2)
        lag = 0.0
        while True:
            found = await metrics(http, port)
            lag = max(lag, found.get("webhook_consumer_attribute_lag_records", 0.0))
            if applied(found) - before >= count:
                out["applied_seconds"] = round(time.monotonic() - started, 2)
                out["max_lag"] = lag
                return
            await asyncio.sleep(POLL)


async def visibility(bench: Bench, backend: str) -> Result:
    """S7d (SQLite) and S7e (Redis): updates at a steady rate, the time from each sampled
    update's produce to the moment the store shows it (what the next delivery reads: the
    service's cache forgets a user as it writes it)."""
    rate, seconds = bench.sizes.visibility_rate, bench.sizes.visibility_seconds
    name = f"s7-visibility-{backend}"
    topic = f"{bench.prefix}-{name}-attributes"
    input_topic = f"{bench.prefix}-{name}-events"
    await create_compacted(bench.bootstrap, topic, bench.sizes.partitions)
    await create_topic(bench.bootstrap, input_topic, bench.sizes.partitions)
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            db = bench.folder / f"{name}.db"
            store: dict[str, Any] = {"backend": "sqlite", "url": f"sqlite:///{db}"}
            probe: Callable[[list[str]], dict[str, int]] = lambda users: _sqlite_seqs(db, users)  # noqa: E731
        else:
            redis = stack.enter_context(private_redis())
            store = {"backend": "redis", "url": redis.url}
            probe = lambda users: _redis_seqs(redis.port, users)  # noqa: E731
        setup, port = setup_for(bench, name, input_topic, topic, store)
        setup.log_level = "warning"
        config = setup.write(bench.folder)
        with bench.log(name).open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                *bench.service(config),
                env={**os.environ, **setup.environ},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        meter = TreeMeter(process.pid)
        try:
            await _ready(port, bench.sizes.timeout)
            cpu0, t0 = meter.sample(), time.monotonic()
            figures = await _paced_updates(bench, topic, rate, seconds, probe, meter)
            figures["cpu_seconds_per_second"] = round(
                (meter.sample() - cpu0) / (time.monotonic() - t0), 3
            )
            figures["peak_rss_mib"] = round(meter.peak_rss_mib, 1)
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 120)
    params = {"rate": rate, "seconds": seconds, "backend": backend, "sampled": "every 10th update"}
    title = f"update produce -> visible, {rate:,}/s, {'SQLite' if backend == 'sqlite' else 'Redis'}"
    return {
        "scenario": "S7d" if backend == "sqlite" else "S7e",
        "title": title,
        "params": params,
        "figures": figures,
    }


async def _ready(port: int, within: float) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(POLL)
    raise RuntimeError("the service never became ready")


async def _paced_updates(
    bench: Bench,
    topic: str,
    rate: int,
    seconds: float,
    probe: Callable[[list[str]], dict[str, int]],
    meter: TreeMeter,
) -> dict[str, Any]:
    waiting: dict[str, tuple[int, int]] = {}  # user -> (the seq to see, produced at, ns)
    latencies: list[float] = []
    done = asyncio.Event()

    def record(i: int) -> tuple[bytes, bytes]:
        return f"u-{i % USERS}".encode(), orjson.dumps({**attributes(i), "seq": i})

    def sent_at(i: int, at: int) -> None:
        if i % 10 == 0:
            waiting[f"u-{i % USERS}"] = (i, at)

    async def watch() -> None:
        while not (done.is_set() and not waiting):
            users = list(waiting)
            if users:
                seen = await asyncio.to_thread(probe, users)
                now = time.time_ns()
                for user in users:
                    wanted = waiting.get(user)
                    if wanted is not None and seen.get(user, -1) >= wanted[0]:
                        latencies.append((now - wanted[1]) / 1e6)
                        del waiting[user]
            meter.sample()
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    sent = await paced(bench.bootstrap, topic, rate, seconds, record, sent_at)
    done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watcher, 30)
    watcher.cancel()
    latencies.sort()
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    return {
        "records": sent,
        "records_per_second": round(sent / seconds, 1),
        "samples": len(latencies),
        "never_seen": len(waiting),
        "visible_ms_p50": p50,
        "visible_ms_p99": p99,
        "visible_ms_max": round(latencies[-1], 1) if latencies else None,
        "summary": f"visible p50 {p50} ms, p99 {p99} ms, max "
        f"{round(latencies[-1], 1) if latencies else '-'} ms ({len(latencies)} samples)",
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def _sqlite_seqs(db: Path, users: list[str]) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
        marks = ",".join("?" * len(users))
        rows = conn.execute(
            f"SELECT user_id, attributes FROM user_attributes WHERE user_id IN ({marks})", users
        ).fetchall()
    return {user: orjson.loads(raw).get("seq", -1) for user, raw in rows}


def _redis_seqs(port: int, users: list[str]) -> dict[str, int]:
    import redis

    client = redis.Redis(port=port)
    try:
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.hget(f"webhook-consumer:attrs:{user}", "seq")
        values = pipe.execute()
    finally:
        client.close()
    return {user: int(v) for user, v in zip(users, values, strict=True) if v is not None}
