"""What the Redis fault scenarios share: one rate-limited channel, replicas of one consumer
group whose limits live in a redis-server of the test's own behind a fault proxy, a receiver
in a process of its own, and the figures every scenario reports.

The figures are measured where the test cannot skew them: the busiest second by the
receiver's clock in its own process, fallback and recovery by the replicas' own log lines,
leases by asking the redis-server directly (not through the proxy).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from consumer.delivery import delivery_id
from consumer.fleet.shared import ChannelKeys
from tests.integration.fleet import PrivateRedis, busiest_second, private_redis
from tests.integration.receiver_process import Arrival, RemoteReceiver, delivered, remote_receiver
from tests.integration.support import (
    Setup,
    channel,
    create_topic,
    encoded,
    event,
    produce,
    record_count,
    write_config,
)
from tests.support.polling import Condition, until

from .fleet import Replica
from .proxy import FaultProxy, fault_proxy

CHANNEL = "limited"
PARTITIONS = 6
COMMIT_INTERVAL_MS = 200


@dataclass(frozen=True, slots=True)
class Limits:
    per_second: float
    burst: int
    cap: int  # max_concurrency: the fleet's, with the redis backend
    timeout: float = 5.0  # the channel's request timeout: a lease outlives it by its margins

    @property
    def most_in_a_second(self) -> float:
        """What the fault suite allows in any second: the limit, the burst, and 10 % of the
        limit for what a switch between Redis and the fallbacks may add."""
        return self.per_second + self.burst + self.per_second * 0.1

    @property
    def lease_ttl(self) -> float:
        """How long a lease outlives its holder (consumer.fleet.limits.lease_ttl)."""
        return self.timeout + 1 + 2 + self.cap / self.per_second


def timestamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


@dataclass
class LimitsFleet:
    setup: Setup
    config: Path
    folder: Path
    limits: Limits
    redis: PrivateRedis
    proxy: FaultProxy
    receiver: RemoteReceiver
    replicas: list[Replica]
    keys: ChannelKeys
    expected: set[str] = field(default_factory=set)  # delivery ids: one per event
    since: float = 0.0  # arrivals before this (time.monotonic, the host's) are not measured
    faulted: float = 0.0  # when the fault began, on the same clock

    def fault_begins(self) -> None:
        self.faulted = time.monotonic()

    async def produce(self, events: int) -> None:
        """The work, once the fleet has formed (what a group forming costs is another
        matter: a replica alone in the group for a moment sends at the whole rate); the
        figures count from here."""
        documents = [event("c", f"u-{len(self.expected) + i}") for i in range(events)]
        self.since = time.monotonic()  # the same clock as the receiver's, on one host
        await produce(self.setup.bootstrap, self.setup.topic, encoded(documents))
        self.expected |= {delivery_id(CHANNEL, [d["event_id"]]) for d in documents}

    def measured(self, arrivals: list[Arrival]) -> list[Arrival]:
        return [a for a in arrivals if a.at >= self.since]

    def replica(self, index: int) -> Replica:
        while len(self.replicas) <= index:
            name = f"webhook-consumer-{len(self.replicas)}"
            self.replicas.append(Replica(name, self.config, self.setup.environ, self.folder))
        return self.replicas[index]

    async def start(self, *indexes: int) -> None:
        await asyncio.gather(*(self.replica(i).start() for i in indexes))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for r in self.replicas for line in r.events(name)]

    async def until(self, condition: Condition, within: float, what: str) -> None:
        """Until `condition` holds (log files, counters, Redis: checked every 0.2 s), else
        fail with `what` and the replicas' last lines."""
        if not await until(condition, within, every=0.2):
            raise AssertionError(f"not within {within} s: {what}\n{self.tails()}")

    async def counted(self, replicas: int, *indexes: int, within: float = 90) -> None:
        """Until each of these replicas has counted `replicas` in the group."""

        def all_counted() -> bool:
            latest = [self.replicas[i].events("rate_limiter.replicas")[-1:] for i in indexes]
            return all(
                line and (line[0]["replicas"], line[0]["source"]) == (replicas, "group")
                for line in latest
            )

        await self.until(all_counted, within, f"{replicas} replicas counted by {indexes}")

    async def fell_back(self, *indexes: int, since: float, within: float = 15) -> None:
        def all_fell_back() -> bool:
            return all(
                any(timestamp(e) >= since for e in self.replicas[i].events("rate_limiter.fallback"))
                for i in indexes
            )

        await self.until(all_fell_back, within, f"replicas {indexes} on their fallbacks")

    async def recovered(self, *indexes: int, since: float, within: float = 30) -> float:
        """Until each replica says it is back on Redis after `since` (a wall-clock time);
        the seconds from `since` to the last of them."""

        def times() -> list[float]:
            return [
                min(
                    (
                        timestamp(e)
                        for e in self.replicas[i].events("rate_limiter.recovered")
                        if timestamp(e) >= since
                    ),
                    default=float("inf"),
                )
                for i in indexes
            ]

        await self.until(lambda: max(times()) < float("inf"), within, f"{indexes} back on Redis")
        return max(times()) - since

    async def all_delivered(self, within: float = 120) -> list[Arrival]:
        await self.receiver_until(lambda a: self.expected <= delivered(a), within, "every delivery")
        return await self.receiver.arrivals()

    async def receiver_until(
        self, condition: Callable[[list[Arrival]], bool], within: float, what: str
    ) -> None:
        if not await self.receiver.wait_for(condition, within):
            raise AssertionError(f"not within {within} s: {what}\n{self.tails()}")

    async def live_leases(self, holder: str = "") -> int:
        """Leases whose expiry has not passed (of holders starting with `holder`), asked of
        the redis-server itself."""
        client = Redis.from_url(self.redis.url)
        try:
            seconds, micros = await client.time()
            now_ms = seconds * 1000 + micros // 1000
            members = await client.zrangebyscore(self.keys.leases, now_ms + 1, "+inf")
        finally:
            await client.aclose()
        return sum(1 for m in members if m.decode().startswith(holder))

    async def no_lease_left(self, within: float, holder: str = "") -> float:
        """Seconds until no live lease (of holders starting with `holder`) is left; fails
        after `within`."""
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def none_left() -> bool:
            return await self.live_leases(holder) == 0

        if not await until(none_left, within, every=0.1):
            raise AssertionError(f"{await self.live_leases(holder)} leases left after {within} s")
        return loop.time() - started

    async def dead_letters(self) -> int:
        return await record_count(self.setup.bootstrap, self.setup.dead_letter_topic)

    async def stop(self) -> list[int]:
        return list(await asyncio.gather(*(r.stop() for r in self.replicas if r.running)))

    def tails(self) -> str:
        return "\n".join(f"--- {r.name} ---\n{r.tail(15)}" for r in self.replicas if r.log.exists())


def busiest(arrivals: list[Arrival]) -> tuple[int, float]:
    """The most requests the receiver saw in any second, by its own clock, and when that
    second began (seconds after the first arrival)."""
    times = sorted(a.at for a in arrivals)
    most = busiest_second(times)
    start = next(
        t for i, t in enumerate(times) if bisect.bisect_left(times, t + 1 - 1e-9) - i == most
    )
    return most, start - times[0]


@contextlib.asynccontextmanager
async def limits_fleet(bootstrap: str, folder: Path, limits: Limits) -> AsyncIterator[LimitsFleet]:
    """Topic, Redis, proxy and receiver ready; replicas started and events produced by the
    scenario (`start`, `produce`), every replica killed at the end if still running."""
    with private_redis(folder / "redis") as redis:
        async with fault_proxy(redis.port) as proxy, remote_receiver() as receiver:
            ch = channel(
                receiver,  # type: ignore[arg-type]
                CHANNEL,
                rate_limit={"per_second": limits.per_second, "burst": limits.burst},
                max_concurrency=limits.cap,
                timeout_seconds=limits.timeout,
            )
            setup = Setup(
                bootstrap,
                receiver,  # type: ignore[arg-type]
                [ch],
                {"c": [CHANNEL]},
                kafka={"commit_interval_ms": COMMIT_INTERVAL_MS, "topic_partitions": PARTITIONS},
                # The backlog stays in memory (no parking): the receiver sees the limit alone.
                retry={"max_backlog_seconds": 300},
                log_level="info",
                tmp=str(folder),
            )
            prefix = f"test-{uuid.uuid4().hex[:8]}:"
            # 1 s, not 0.5: a replica's start-up on 2 shared cores can stall its loop that
            # long, which would look like one more outage.
            setup.rate_limiter = {
                "backend": "redis",
                "url": proxy.url,
                "key_prefix": prefix,
                "timeout_seconds": 1,
            }
            config = write_config(setup, folder)
            await receiver.share_secrets()
            await create_topic(bootstrap, setup.topic, PARTITIONS)
            keys = ChannelKeys(prefix, setup.group, CHANNEL)
            fleet = LimitsFleet(setup, config, folder, limits, redis, proxy, receiver, [], keys)
            try:
                yield fleet
            finally:
                for replica in fleet.replicas:
                    if replica.running:
                        await replica.kill()
