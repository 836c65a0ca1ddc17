"""The fleet-wide limits' Lua scripts on a real redis-server, with several "replicas" (each
its own client), no service: the rate, the pause, the leases, the circuit, and what a Redis
that stops answering costs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from consumer.breaker import State
from consumer.fleet.circuit import RedisCircuit
from consumer.fleet.gate import FleetGate
from consumer.fleet.leases import RedisLeases
from consumer.fleet.limiter import FleetLimiter
from consumer.fleet.link import RedisLink
from consumer.fleet.permits import RedisPermits
from consumer.fleet.shared import ChannelKeys
from consumer.redisclient import open_redis

from .fleet import busiest_second, private_redis

Links = Callable[[int], list[RedisLink]]


@pytest.fixture
async def links(redis_url: str) -> AsyncIterator[Links]:
    made: list[RedisLink] = []

    def make(count: int, url: str = redis_url, replicas: int = 1) -> list[RedisLink]:
        new = [link_to(url, replicas) for _ in range(count)]
        made.extend(new)
        return new

    yield make
    for link in made:
        await link.close()


def link_to(url: str, replicas: int = 1) -> RedisLink:
    client = open_redis(url, timeout_seconds=0.5, max_connections=16, retry_once=False)
    blocking = open_redis(
        url, timeout_seconds=0.5, max_connections=4, retry_once=False, reply_timeout_seconds=2
    )
    return RedisLink(
        client, timeout_seconds=0.5, replicas=lambda: replicas, shown_url=url, blocking=blocking
    )


def keys(channel: str = "c", group: str | None = None) -> ChannelKeys:
    return ChannelKeys(f"test-{uuid.uuid4().hex[:8]}:", group or "g", channel)


async def demand(acquire: Callable[[], Awaitable[float]], until: float, out: list[float]) -> None:
    while time.monotonic() < until:
        await acquire()
        out.append(time.monotonic())


async def test_four_replicas_hold_one_rate_for_30_seconds(links: Links) -> None:
    rate, burst = 100, 100
    channel = keys()
    limiters = [
        FleetLimiter(RedisPermits(link, channel, rate, burst), link, rate, burst)
        for link in links(4)
    ]
    sent: list[float] = []
    end = time.monotonic() + 30
    await asyncio.gather(*(demand(lim.acquire, end, sent) for lim in limiters for _ in range(16)))
    sent.sort()
    busiest = busiest_second(sent)
    mean = (len(sent) - burst) / (sent[-1] - sent[burst - 1])
    print(
        f"\n4 replicas, {rate}/s burst {burst}, 30 s: busiest second {busiest}, mean {mean:.1f}/s"
    )
    assert busiest <= rate + burst
    assert abs(mean - rate) <= rate * 0.1


async def test_two_deployments_never_share_a_limit(links: Links) -> None:
    a, b, c = links(3)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    one = FleetLimiter(RedisPermits(a, ChannelKeys(prefix, "one", "c"), 1, 1), a, 1, 1)
    same = FleetLimiter(RedisPermits(b, ChannelKeys(prefix, "one", "c"), 1, 1), b, 1, 1)
    other = FleetLimiter(RedisPermits(c, ChannelKeys(prefix, "other", "c"), 1, 1), c, 1, 1)
    assert await one.acquire() < 0.5
    assert await other.acquire() < 0.5  # its own burst, not one's
    assert await same.acquire() > 0.5  # one's limit: the next permit, a second later


async def test_a_pause_asked_of_one_replica_holds_the_others(links: Links) -> None:
    a, b = links(2)
    channel = keys()
    first = FleetLimiter(RedisPermits(a, channel, 100, 100), a, 100, 100)
    second = FleetLimiter(RedisPermits(b, channel, 100, 100), b, 100, 100)
    await first.acquire()
    first.pause(1.0)
    await first.close()  # the pause is written
    waited = await second.acquire()
    assert 0.8 <= waited <= 2
    assert second.paused_for() == 0


async def test_leases_cap_the_fleet_and_a_crashed_holder_gives_them_back(links: Links) -> None:
    a, b = links(2)
    channel = keys()
    crashed = RedisLeases(a, channel, 2, ttl_seconds=0.5)
    alive = RedisLeases(b, channel, 2, ttl_seconds=0.5)
    assert await crashed.take("a:1") == (True, False)
    assert await alive.take("b:1") == (True, False)
    assert await alive.take("b:2") == (False, True)  # two out, across replicas
    assert await alive.give_back("b:1")  # b:2 waits
    assert await alive.freed(0.1)  # and is woken
    assert await alive.take("b:2") == (True, True)
    assert not (await alive.take("b:3"))[0]
    await asyncio.sleep(0.6)  # a:1 was never given back: it lapses after its expiry
    assert (await alive.take("b:3"))[0]


async def test_gates_of_three_replicas_keep_one_cap(links: Links) -> None:
    channel = keys()
    gates = [
        FleetGate(RedisLeases(link, channel, 3, 5), link, 3, holder=f"r{i}")
        for i, link in enumerate(links(3))
    ]
    running = most = 0

    async def request(gate: FleetGate) -> None:
        nonlocal running, most
        lease = await gate.acquire()
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)  # the request being answered
        running -= 1
        lease.release()

    await asyncio.gather(*(request(g) for g in gates for _ in range(10)))
    assert most == 3
    for gate in gates:
        await gate.close()


async def eventually(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)  # polling for a condition, with a deadline
    return True


def circuit(link: RedisLink, channel: ChannelKeys, holder: str) -> RedisCircuit:
    return RedisCircuit(
        link,
        channel,
        failures=3,
        cooldown_seconds=0.3,
        max_cooldown_seconds=1,
        probe_timeout=0.4,
        holder=holder,
    )


async def test_the_circuit_opens_on_failures_in_total_and_one_replica_probes(
    links: Links,
) -> None:
    channel = keys()
    a, b, c = (circuit(link, channel, f"r{i}") for i, link in enumerate(links(3)))
    await a.failed(probe=False)
    await b.failed(probe=False)
    assert (await c.read()).state is State.CLOSED
    opened = await c.failed(probe=False)
    assert (opened.state, opened.failures) == (State.OPEN, 3)
    assert not (await a.claim_probe())[0]  # still cooling down
    await asyncio.sleep(0.35)
    claims = await asyncio.gather(a.claim_probe(), b.claim_probe(), c.claim_probe())
    assert [claimed for claimed, _ in claims].count(True) == 1
    reopened = await a.failed(probe=True)
    assert (reopened.state, reopened.cooldown) == (State.OPEN, 0.6)  # doubled
    await asyncio.sleep(0.65)
    assert (await b.claim_probe())[0]
    await asyncio.sleep(0.45)  # the probe's holder vanished: another may take over
    assert (await c.claim_probe())[0]
    closed = await c.succeeded()
    assert (closed.state, closed.failures, closed.cooldown) == (State.CLOSED, 0, 0.3)
    assert closed.version > reopened.version


async def test_a_redis_that_stops_answering_costs_one_timeout_then_the_fallback(
    tmp_path: Path,
) -> None:
    with private_redis(tmp_path / "redis") as redis:
        link = link_to(redis.url, replicas=2)
        channel = keys()
        limiter = FleetLimiter(RedisPermits(link, channel, 1000, 10), link, 1000, 10)
        await limiter.acquire()
        redis.freeze()
        try:
            started = time.monotonic()
            await limiter.acquire()
            first = time.monotonic() - started
            assert not link.shared
            started = time.monotonic()
            for _ in range(10):
                await limiter.acquire()
            fallback = time.monotonic() - started
        finally:
            redis.thaw()
        started = time.monotonic()
        await eventually(lambda: link.shared, within=15)
        recovered = time.monotonic() - started
        await link.close()
    print(
        f"\nfirst call on a hung Redis {first:.2f} s, then 10 permits in {fallback:.3f} s; "
        f"back {recovered:.2f} s after it answered again"
    )
    assert first < 0.5 + 0.25  # the timeout, and some load
    assert fallback < 0.25  # no round trip is tried while it is down
    assert link.shared, f"not back {recovered:.1f} s after Redis answered again"
