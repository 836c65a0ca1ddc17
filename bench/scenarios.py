"""S0-S5: the ceilings, the service (throughput, batching, latency, isolation), the naive one.

Each scenario returns {"scenario", "title", "params", "figures"}; the report reads those.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import time
from collections.abc import Callable, Collection
from typing import Any

from consumer.config import HttpConfig
from consumer.delivery import delivery_id

from .context import CONCURRENCY, FAIL, HANG, Bench, Topic, healthy_paths
from .kafka import admin_client, create_topic, end_offsets, paced
from .measure import Hook, Run, nothing, run_consumer
from .procstat import TreeMeter
from .workload import CHANNELS, ServiceSetup, encode, event, path

Result = dict[str, Any]


def _result(scenario: str, title: str, params: dict[str, Any], figures: dict[str, Any]) -> Result:
    return {"scenario": scenario, "title": title, "params": params, "figures": figures}


FIREHOSE_TITLES = {
    "aiohttp": ("S0a", "stock aiohttp fire-hose (HTTP ceiling)"),
    "lean": ("S0c", "lean-transport fire-hose (HTTP ceiling)"),
}


async def s0_firehose(bench: Bench, client: str) -> Result:
    """S0a (stock aiohttp) or S0c (the lean transport), on uvloop with the collector tuned."""
    requests = bench.sizes.firehose_requests
    concurrency = CONCURRENCY * len(CHANNELS)
    argv = [bench.python, "-m", "bench.firehose", bench.receiver.base]
    argv += ["--requests", str(requests), "--concurrency", str(concurrency)]
    argv += ["--client", client, "--loop", "uvloop"]
    scenario, title = FIREHOSE_TITLES[client]
    run = await run_consumer(
        argv,
        receiver=bench.receiver,
        bootstrap=bench.bootstrap,
        group=None,
        topic="",
        records=0,
        paths=healthy_paths(),
        expected_ok=requests,
        within=bench.sizes.timeout,
        log=bench.log(scenario.lower()),
    )
    params = {
        "requests": requests,
        "concurrency": concurrency,
        "paths": len(CHANNELS),
        "gc": "tuned as run tunes it",
        **stack(client, "uvloop"),
    }
    return _result(scenario, title, params, run.figures())


def stack(http_client: str | None, loop: str | None) -> dict[str, str | None]:
    """What every scenario records: the HTTP client and the event loop it ran on."""
    return {"http_client": http_client, "loop": loop}


def _service_stack(setup: ServiceSetup) -> dict[str, str | None]:
    """`run` picks uvloop where it is installed; the client is the config's."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return stack(setup.http_client or HttpConfig().client, loop)


async def s0b_raw_kafka(bench: Bench) -> Result:
    topic = bench.topic("main")
    records = topic.records
    process = await asyncio.create_subprocess_exec(
        bench.python,
        "-m",
        "bench.rawconsume",
        bench.bootstrap,
        topic.name,
        str(records),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), bench.sizes.timeout)
    measured = json.loads(out)
    figures = {
        "records": measured["records"],
        "records_per_second": round(measured["records"] / measured["seconds"], 1),
        "cpu_seconds_per_1000": round(1000 * measured["cpu_seconds"] / measured["records"], 3),
        "window_seconds": round(measured["seconds"], 2),
    }
    params = {
        "records": records,
        "partitions": bench.sizes.partitions,
        "max_records": 500,
        **stack(None, "asyncio"),
    }
    return _result("S0b", "raw aiokafka consumption (Kafka ceiling)", params, figures)


async def _service_run(
    bench: Bench,
    setup: ServiceSetup,
    workers: int,
    expected_ok: int,
    paths: Collection[str],
    during: Hook = nothing,
) -> Run:
    config = setup.write(bench.folder)
    return await run_consumer(
        bench.service(config, workers),
        env=setup.environ,
        receiver=bench.receiver,
        bootstrap=bench.bootstrap,
        group=setup.group,
        topic=setup.topic,
        records=await end_offsets(bench.bootstrap, setup.topic),
        paths=paths,
        expected_ok=expected_ok,
        within=bench.sizes.timeout,
        log=bench.log(setup.name),
        during=during,
    )


def _setup(bench: Bench, name: str, topic: Topic, **options: Any) -> ServiceSetup:
    return ServiceSetup(
        bench.bootstrap,
        bench.prefix,
        name,
        topic.name,
        bench.receiver.base,
        bench.db,
        **options,
    )


async def s1_throughput(
    bench: Bench, workers: int, during: Hook = nothing, in_flight: int | None = None
) -> Result:
    """`in_flight` sets kafka.max_in_flight_per_partition (default: the service's 2000)."""
    topic = bench.topic("main")
    events = topic.records
    kafka = {} if in_flight is None else {"max_in_flight_per_partition": in_flight}
    name = f"s1-w{workers}" + ("" if in_flight is None else f"-f{in_flight}")
    setup = _setup(bench, name, topic, kafka=kafka)
    run = await _service_run(bench, setup, workers, events * len(CHANNELS), healthy_paths(), during)
    figures = {
        **run.figures(),
        # Healthy work the lanes parked on the delay path (backlog over max_backlog_seconds).
        "delay_records": await _records_under(bench, f"{setup.group}-retry"),
    }
    summary = getattr(during, "summary", None)
    if summary is not None:
        figures["profile"] = summary()
    params = {
        "events": events,
        "partitions": bench.sizes.partitions,
        "channels": len(CHANNELS),
        "workers": workers,
        "rate_limit": None,
        "max_concurrency": CONCURRENCY,
        "batch_max_users": 1,
        "max_in_flight_per_partition": in_flight or 2000,
        **_service_stack(setup),
    }
    if in_flight is None:
        return _result(f"S1/{workers}w", f"service, {workers} worker(s)", params, figures)
    title = f"service, {workers} worker(s), in-flight {in_flight}/partition"
    return _result(f"S1/{workers}w-f{in_flight}", title, params, figures)


async def s2_batching(bench: Bench) -> Result:
    topic = bench.topic("main")
    events = topic.records
    batch = {"max_users": 100, "linger_ms": 200}
    setup = _setup(bench, "s2", topic, channel_options={"*": {"batch": batch}})
    run = await _service_run(bench, setup, 1, 0, healthy_paths())
    figures = run.figures()
    figures["delay_records"] = await _records_under(bench, f"{setup.group}-retry")
    user_events = events * len(CHANNELS)
    window = run.window_seconds
    figures.update(
        requests=run.answered_ok,
        user_events=user_events,
        user_events_per_second=round(user_events / window, 1) if window > 0 else None,
        events_per_second_per_channel=round(events / window, 1) if window > 0 else None,
        users_per_request=round(user_events / run.ok, 1) if run.ok else None,
        cpu_seconds_per_1000_user_events=round(
            1000 * figures["cpu_seconds_window"] / user_events, 3
        ),
        user_events_per_cpu_second=round(user_events / figures["cpu_seconds_window"], 1)
        if figures["cpu_seconds_window"] > 0
        else None,
    )
    params = {
        "events": events,
        "channels": len(CHANNELS),
        "batch": batch,
        "workers": 1,
        **_service_stack(setup),
    }
    return _result("S2", "service, batch.max_users 100", params, figures)


async def s3_latency(bench: Bench) -> Result:
    """A paced producer against a running service: produce->receipt latency, CPU per second."""
    topic = f"{bench.prefix}-s3"
    await create_topic(bench.bootstrap, topic, bench.sizes.partitions)
    channel = CHANNELS[0]
    setup = ServiceSetup(
        bench.bootstrap,
        bench.prefix,
        "s3",
        topic,
        bench.receiver.base,
        bench.db,
        channels=(channel,),
    )
    config = setup.write(bench.folder)
    await bench.receiver.reset()
    with bench.log("s3").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *bench.service(config),
            env={**os.environ, **setup.environ},
            stderr=log,
            stdout=asyncio.subprocess.DEVNULL,
        )
    meter = TreeMeter(process.pid)
    phases: dict[str, Any] = {}
    try:
        await _warm_up(bench, topic, channel, meter)
        started = time.monotonic()
        idle_cpu = meter.sample()
        await _sampling(meter, bench.sizes.idle_seconds)
        phases["idle"] = {
            "cpu_seconds_per_second": round(
                (meter.sample() - idle_cpu) / (time.monotonic() - started), 4
            )
        }
        for rate in bench.sizes.paced_rates:
            phases[f"{rate}/s"] = await _paced_phase(bench, topic, channel, rate, meter)
    finally:
        process.terminate()
        await process.wait()
    figures = {**phases, "peak_rss_mib": round(meter.peak_rss_mib, 1)}
    params = {
        "rates": list(bench.sizes.paced_rates),
        "seconds_per_rate": bench.sizes.paced_seconds,
        "channels": 1,
        "partitions": bench.sizes.partitions,
        "commit_interval_ms": 500,
        **_service_stack(setup),
    }
    return _result("S3", "service, latency at a steady rate", params, figures)


async def _sampling(meter: TreeMeter, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        meter.sample()
        await asyncio.sleep(0.5)


async def _until(condition: Callable[[], Any], within: float, meter: TreeMeter) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        meter.sample()
        if await condition():
            return True
        await asyncio.sleep(0.2)
    return False


async def _delivered(bench: Bench, channel: str) -> int:
    stats = await bench.receiver.stats()
    return stats[path(channel)].unique_ok if path(channel) in stats else 0


async def _warm_up(bench: Bench, topic: str, channel: str, meter: TreeMeter) -> None:
    """Until the service has joined and delivered a first few events."""
    from .kafka import preload

    await preload(bench.bootstrap, topic, [encode(event(i)) for i in range(50)])

    async def arrived() -> bool:
        return await _delivered(bench, channel) >= 50

    if not await _until(arrived, 120, meter):
        raise RuntimeError("S3: the service did not deliver its warm-up events")


async def _paced_phase(
    bench: Bench, topic: str, channel: str, rate: int, meter: TreeMeter
) -> dict[str, Any]:
    await bench.receiver.reset()
    count = int(rate * bench.sizes.paced_seconds) + rate
    documents = [event(i) for i in range(count)]
    ids = [delivery_id(channel, [d["event_id"]]) for d in documents]
    produced: dict[str, int] = {}

    def sent_at(i: int, at: int) -> None:
        produced[ids[i]] = at

    cpu0, t0 = meter.sample(), time.monotonic()
    sampler = asyncio.create_task(_sampling(meter, bench.sizes.paced_seconds + 5))
    sent = await paced(
        bench.bootstrap,
        topic,
        rate,
        bench.sizes.paced_seconds,
        lambda i: encode(documents[i]),
        sent_at,
    )

    async def all_in() -> bool:
        return await _delivered(bench, channel) >= sent

    complete = await _until(all_in, 60, meter)
    sampler.cancel()
    cpu1, t1 = meter.sample(), time.monotonic()
    received: dict[str, int] = {}  # delivery id -> its first receipt
    for p, delivery, at in await bench.receiver.receipts():
        if p == path(channel):
            received.setdefault(delivery, at)
    latencies = sorted((received[i] - produced[i]) / 1e6 for i in produced if i in received)
    return {
        "sent": sent,
        "received": len(latencies),
        "complete": complete,
        "achieved_rate": round(sent / bench.sizes.paced_seconds, 1),
        "latency_ms_p50": _percentile(latencies, 0.50),
        "latency_ms_p99": _percentile(latencies, 0.99),
        "latency_ms_max": round(latencies[-1], 1) if latencies else None,
        "cpu_seconds_per_second": round((cpu1 - cpu0) / (t1 - t0), 4),
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


async def s4_isolation(
    bench: Bench, in_flight: int | None = None, during: Hook = nothing
) -> Result:
    """`in_flight` sets kafka.max_in_flight_per_partition, as in S1's variant."""
    topic = bench.topic("mid")
    events = topic.records
    kafka = {} if in_flight is None else {"max_in_flight_per_partition": in_flight}
    name = "s4" + ("" if in_flight is None else f"-f{in_flight}")
    setup = _setup(bench, name, topic, channels=(*CHANNELS, HANG, FAIL), kafka=kafka)
    run = await _service_run(bench, setup, 1, events * len(CHANNELS), healthy_paths(), during)
    stats = await bench.receiver.stats()
    figures = run.figures()
    figures.update(
        healthy_deliveries_per_second=figures["deliveries_per_second_to_last_receipt"],
        hang_requests=stats[path(HANG)].count() if path(HANG) in stats else 0,
        fail_requests=stats[path(FAIL)].count() if path(FAIL) in stats else 0,
        delay_records=await _records_under(bench, f"{setup.group}-retry"),
        dead_letters=await _records_under(bench, f"{setup.group}-dlq"),
    )
    summary = getattr(during, "summary", None)
    if summary is not None:
        figures["profile"] = summary()
    params = {
        "events": events,
        "healthy_channels": len(CHANNELS),
        "unhealthy": {"hang": "never answers", "fail": "503"},
        "timeout_seconds": 10.0,
        "retry": "defaults: quick_attempts 3, backoff 200 ms..5 s, schedule 5 s, 300 s, ...; "
        "circuit breaker 5 failures / 30 s; max_backlog_seconds 5",
        "max_in_flight_per_partition": in_flight or 2000,
        **_service_stack(setup),
    }
    title = "service, one hanging and one 503 channel"
    if in_flight is None:
        return _result("S4", title, params, figures)
    return _result(f"S4-f{in_flight}", f"{title}, in-flight {in_flight}", params, figures)


async def _records_under(bench: Bench, prefix: str) -> int:
    async with admin_client(bench.bootstrap) as admin:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
    total = 0
    for topic in topics:
        total += await end_offsets(bench.bootstrap, topic)
    return total


async def s5_naive(bench: Bench) -> Result:
    topic = bench.topic("small")
    events = topic.records
    group = f"{bench.prefix}-s5"
    argv = [bench.python, "-m", "bench.naive", bench.bootstrap, topic.name, group]
    argv += [str(bench.db), bench.receiver.base]
    run = await run_consumer(
        argv,
        receiver=bench.receiver,
        bootstrap=bench.bootstrap,
        group=group,
        topic=topic.name,
        records=events,
        paths=healthy_paths(),
        expected_ok=events * len(CHANNELS),
        within=bench.sizes.timeout,
        log=bench.log("s5"),
    )
    params = {
        "events": events,
        "channels": len(CHANNELS),
        "concurrency": 1,
        "commit": "per record",
        **stack("aiohttp", "asyncio"),
    }
    return _result("S5", "naive sequential consumer", params, run.figures())
