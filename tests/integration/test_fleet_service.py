"""Limits across replicas: several services of one consumer group on one real broker, one
real Redis, one receiver. The rate test runs `webhook-consumer run` processes and a receiver
process; the others run each replica as a `run_service` of its own in this process, and
measure what cannot be skewed by it (concurrent requests, the senders' own stamps)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consumer.receiver import Receiver
from tests.support.polling import until
from tests.support.processes import Launch

from .fleet import ReplicaProcesses, SlowReceiver, busiest_second, steady_rate
from .receiver_process import delivered, remote_receiver
from .support import (
    Setup,
    StartService,
    channel,
    create_topic,
    encoded,
    event,
    group_state,
    produce,
    write_config,
)

REPLICAS = 3


def shared_limits(redis_url: str, setup_suffix: str) -> dict[str, Any]:
    # A 1 s timeout, not 0.5: on 2 shared cores a replica's start-up can stall its event loop
    # that long, which would count as a Redis outage (and put that replica on its fallback).
    return {
        "backend": "redis",
        "url": redis_url,
        "key_prefix": f"test-{setup_suffix}:",
        "timeout_seconds": 1,
    }


async def test_three_replicas_hold_one_rate_together(
    bootstrap: str, redis_url: str, tmp_path: Path, launch: Launch
) -> None:
    """Three `webhook-consumer run` processes and a receiver in a process of its own: the
    send times are the replicas' own stamps (the body's timestamp, taken once the request
    may go), the arrival times the receiver's own clock, neither skewed by this process."""
    rate, burst, total = 100, 100, 3300  # a 30 s backlog at the fleet's rate
    async with remote_receiver() as receiver:
        limited = channel(
            receiver,  # type: ignore[arg-type]
            "shared",
            rate_limit={"per_second": rate, "burst": burst},
            max_concurrency=16,
        )
        # The whole backlog is held in memory (no parking on the delay path), so what
        # reaches the receiver shows the rate limit alone.
        setup = Setup(
            bootstrap,
            receiver,  # type: ignore[arg-type]
            [limited],
            {"c": ["shared"]},
            retry={"max_backlog_seconds": 60},
            tmp=str(tmp_path),
        )
        setup.rate_limiter = shared_limits(redis_url, setup.suffix)
        config = write_config(setup, tmp_path)
        await receiver.share_secrets()
        await create_topic(bootstrap, setup.topic, REPLICAS)
        await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(total)))
        replicas = ReplicaProcesses(launch, config, setup.environ, tmp_path, REPLICAS)
        await replicas.start()
        try:
            assert await receiver.wait_for(lambda a: len(delivered(a)) >= total, within=150)
        finally:
            statuses = await replicas.stop()
        arrivals = await receiver.arrivals()
    assert statuses == [0] * REPLICAS
    assert all(a.status == 200 for a in arrivals), "a request failed verification"
    arrived = [a.at for a in arrivals]
    sent = [a.sent_ms / 1000 for a in arrivals]
    busiest, busiest_sent, mean = (
        busiest_second(arrived),
        busiest_second(sent),
        steady_rate(sent, burst),
    )
    print(
        f"\n3 replicas, {rate}/s burst {burst}: busiest second {busiest_sent} as sent, "
        f"{busiest} as received, mean {mean:.1f}/s"
    )
    # GCRA allows rate + burst in any second of slots. A request goes out up to 50 ms after
    # its slot (the staleness bound of a permit), so a second of send stamps may take in 5
    # more whose slots fell just before it.
    assert busiest_sent <= rate + burst + rate * 0.05, f"{busiest_sent} sent in one second"
    # Arrivals add the network's and the senders' event loops' delays: on 2 shared cores a
    # replica's loop can stall for ~100 ms and let its requests out together.
    assert busiest <= rate + burst + rate * 0.1, f"{busiest} received in one second"
    assert abs(mean - rate) <= rate * 0.1, f"mean rate {mean:.1f}/s"


@pytest.fixture
async def slow() -> AsyncIterator[SlowReceiver]:
    """A receiver that takes 2 s per answer."""
    server = SlowReceiver({}, delay=2.0)
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize(("backend", "most"), [("redis", 4), ("local", 4 * REPLICAS)])
async def test_concurrency_cap_across_replicas(
    bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    backend: str,
    most: int,
    slow: SlowReceiver,
    running_service: StartService,
) -> None:
    """A receiver that takes 2 s per answer, `max_concurrency: 4`: with `redis` the cap holds
    for the three replicas together, with `local` for each of them."""
    count = 24
    name = "slow"
    ch = {
        "name": name,
        "url": slow.url(name),
        "secret_env": "SECRET_SLOW",
        "template_params": {"title": "string"},
        "max_concurrency": 4,
        "timeout_seconds": 10,
    }
    setup = Setup(bootstrap, Receiver({}), [ch], {"c": [name]}, tmp=str(tmp_path))
    if backend == "redis":
        setup.rate_limiter = shared_limits(redis_url, setup.suffix)
    slow.secrets[name] = setup.environ["SECRET_SLOW"]
    await create_topic(bootstrap, setup.topic, REPLICAS)
    config = setup.config()
    services = [running_service(config, setup.environ) for _ in range(REPLICAS)]

    # Events only once all three hold a partition each: a replica that joined first would
    # otherwise take every partition and send all of them before the others are members.
    async def all_members() -> bool:
        return await group_state(bootstrap, setup.group) == ("Stable", REPLICAS)

    assert await until(all_members, within=60, every=0.2), "no stable group of three"
    await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(count)))
    assert await slow.wait_for(lambda: len(slow.answered) >= count, within=90)
    for service in services:
        await service.shutdown()
    print(f"\n{backend}: at most {slow.most} concurrent requests, {len(slow.answered)} in all")
    assert slow.unverified == 0
    # Each request once: answers take 2 s against a 10 s timeout, and the stops drain.
    assert len(slow.answered) == count
    assert slow.most <= most
    assert slow.most > (4 if backend == "local" else 3), "the cap was never reached"


async def test_circuit_opens_for_the_fleet_and_one_replica_probes(
    bootstrap: str, receiver: Receiver, redis_url: str, tmp_path: Path, launch: Launch
) -> None:
    """Three `webhook-consumer run` processes, measured on their own send stamps: the next
    probe is claimed no sooner than a cool-down after the last failure was written (both on
    the host's clock), so two probes' stamps are at least a cool-down apart, however loaded
    the machine."""
    failures, cooldown = 6, 2.0
    down = channel(
        receiver,
        "down",
        rate_limit={"per_second": 10, "burst": 1},
        max_concurrency=1,
        timeout_seconds=2,
    )
    setup = Setup(
        bootstrap,
        receiver,
        [down],
        {"c": ["down"]},
        retry={
            "schedule_seconds": [2, 4, 8, 16, 32],
            "max_age_seconds": 600,
            "circuit_breaker": {
                "failures": failures,
                "cooldown_seconds": cooldown,
                "max_cooldown_seconds": cooldown,
            },
        },
        log_level="info",
        tmp=str(tmp_path),
    )
    setup.rate_limiter = shared_limits(redis_url, setup.suffix)
    receiver.answer("down", default=503)
    await create_topic(bootstrap, setup.topic, REPLICAS)
    count = 30
    await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(count)))
    replicas = ReplicaProcesses(
        launch, write_config(setup, tmp_path), setup.environ, tmp_path, REPLICAS
    )
    await replicas.start()
    try:
        # Opening, then at least three probes: one per cool-down.
        enough = failures + REPLICAS - 1 + 3  # at most REPLICAS - 1 past the threshold
        assert await receiver.wait_for(lambda r: len(r.received) >= enough, within=90)
        failed = [int(r.body["timestamp"]) / 1000 for r in receiver.received]
        receiver.answer("down", default=200)
        assert await receiver.wait_for(
            lambda r: len({x.delivery_id for x in r.delivered()}) >= count, within=90
        )
    finally:
        statuses = await replicas.stop()
    assert statuses == [0] * REPLICAS
    # Every replica kept to the shared circuit: none fell back to a circuit of its own.
    assert not [e for log in replicas.logs for e in log.events("rate_limiter.fallback")]
    sent = sorted(failed)
    # The circuit opened once the fleet had seen `failures` failures: the first gap of a
    # cool-down comes after them (with max_concurrency 1, the fleet has one request out at
    # a time, so at most one per other replica can be on its way as it opens).
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    opened = next(i for i, gap in enumerate(gaps) if gap >= cooldown - 0.01) + 1
    probes = sent[opened - 1 :]  # the last failure before the opening, then each probe
    shown = [round(t - sent[0], 3) for t in probes]
    print(f"\nopened after {opened} failed requests; then requests at {shown} s")
    assert failures <= opened <= failures + REPLICAS - 1
    assert len(probes) >= 3
    # One probe per cool-down for the fleet, never one per replica: stamps are whole
    # milliseconds, hence the 10 ms.
    probe_gaps = [round(b - a, 3) for a, b in itertools.pairwise(probes)]
    assert all(gap >= cooldown - 0.01 for gap in probe_gaps), probe_gaps
