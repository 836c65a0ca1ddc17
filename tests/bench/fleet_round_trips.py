"""Redis round trips of the fleet-wide limits per 1,000 deliveries (`rate_limiter: redis`).

Three replica processes drive one channel's limiter, gate and breaker in the order a lane
does (admit, a permit, a lease, confirm, the request, release, record) against a real
Redis ($REDIS_URL, default the local one), with 16 workers each. Prints one JSON line per
scenario; nothing here asserts a target.

    python -m tests.bench.fleet_round_trips [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from consumer.breaker import CircuitBreaker
from consumer.fleet.breaker import FleetBreaker
from consumer.fleet.circuit import RedisCircuit
from consumer.fleet.gate import HOLD, FleetGate
from consumer.fleet.leases import RedisLeases
from consumer.fleet.limiter import FleetLimiter
from consumer.fleet.link import RedisLink
from consumer.fleet.permits import RedisPermits
from consumer.fleet.shared import ChannelKeys
from consumer.ratelimit import LocalLimiter, RateLimiter
from consumer.redisclient import open_redis

REPLICAS, WORKERS = 3, 16


@dataclass(frozen=True)
class Scenario:
    name: str
    per_second: float | None  # the channel's rate limit; None: none
    max_concurrency: int
    request_seconds: float  # how long the receiver takes to answer


SCENARIOS = (
    Scenario("busy: 500/s, 5 ms answers", 500, 16, 0.005),
    Scenario("slow rate: 5/s, 5 ms answers", 5, 16, 0.005),
    Scenario("slow receiver: no rate limit, 2 s answers, max_concurrency 4", None, 4, 2.0),
)


async def replica(
    url: str, scenario: Scenario, keys: ChannelKeys, until: float
) -> tuple[int, Counter[str]]:
    client = open_redis(url, timeout_seconds=0.5, max_connections=64, retry_once=False)
    blocking = open_redis(
        url, timeout_seconds=0.5, max_connections=8, retry_once=False, reply_timeout_seconds=2
    )
    link = RedisLink(
        client, timeout_seconds=0.5, replicas=lambda: REPLICAS, shown_url=url, blocking=blocking
    )
    limiter: RateLimiter = LocalLimiter()
    if scenario.per_second is not None:
        rate = scenario.per_second
        limiter = FleetLimiter(RedisPermits(link, keys, rate, int(rate)), link, rate, int(rate))
    cap = scenario.max_concurrency
    gate = FleetGate(
        RedisLeases(link, keys, cap, 10 + HOLD + 2), link, cap, holder=uuid.uuid4().hex
    )
    circuit = RedisCircuit(
        link,
        keys,
        failures=5,
        cooldown_seconds=30,
        max_cooldown_seconds=300,
        probe_timeout=11,
    )
    breaker = FleetBreaker(
        circuit,
        link,
        CircuitBreaker(5, 30, 300),
        cooldown_seconds=30,
        max_cooldown_seconds=300,
        probe_timeout=11,
    )
    delivered = 0

    async def worker() -> None:
        nonlocal delivered
        while True:
            assert await breaker.admit()
            await limiter.acquire()
            lease = await gate.acquire()
            admission = await breaker.confirm()
            await asyncio.sleep(scenario.request_seconds)  # the receiver answering
            lease.release()
            breaker.record(False, admission)
            delivered += 1

    workers = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    await asyncio.sleep(until - time.monotonic())
    counted, trips = delivered, Counter(link.round_trips)  # the figures of the window
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    await gate.close()
    await breaker.close()
    await link.close()
    return counted, trips


async def measure(url: str, scenario: Scenario, seconds: float) -> dict[str, object]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    start = time.time() + 3  # every replica process has started by then
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.fleet_round_trips",
            f"--replica={SCENARIOS.index(scenario)}",
            f"--prefix={prefix}",
            f"--start={start}",
            f"--seconds={seconds}",
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(REPLICAS)
    ]
    outputs = [json.loads((await p.communicate())[0]) for p in processes]
    delivered = sum(out["delivered"] for out in outputs)
    trips: Counter[str] = sum((Counter(out["round_trips"]) for out in outputs), Counter())
    total = sum(trips.values())
    return {
        "scenario": scenario.name,
        "seconds": seconds,
        "delivered": delivered,
        "per_second": round(delivered / seconds, 1),
        "round_trips": total,
        "round_trips_per_1000_deliveries": round(total * 1000 / max(1, delivered)),
        "by_script_per_1000": {
            k: round(v * 1000 / max(1, delivered)) for k, v in trips.most_common()
        },
    }


async def one_replica(
    url: str, scenario: Scenario, prefix: str, start: float, seconds: float
) -> None:
    await asyncio.sleep(max(0.0, start - time.time()))  # the replicas begin together
    keys = ChannelKeys(prefix, "bench", "channel")
    delivered, trips = await replica(url, scenario, keys, time.monotonic() + seconds)
    print(json.dumps({"delivered": delivered, "round_trips": trips}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--replica", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if args.replica is not None:  # one of the replica processes
        scenario = SCENARIOS[args.replica]
        asyncio.run(one_replica(url, scenario, args.prefix, args.start, args.seconds))
        return
    for scenario in SCENARIOS:
        print(json.dumps(asyncio.run(measure(url, scenario, args.seconds))), flush=True)


if __name__ == "__main__":
    main()
