"""The fleet-wide limits on a real redis-server, with several "replicas" (each its own
client), no service: the rate, the pause, the cap, and what a Redis that stops answering
costs. Each script's own rules are in test_fleet_scripts.py."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from consumer.attributes.urls import shown_url
from consumer.fleet.channel_link import ChannelLink
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
        client,
        timeout_seconds=0.5,
        replicas=lambda: replicas,
        shown_url=shown_url(url),  # as the service shows it: no password
        blocking=blocking,
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
    sent: list[float] = []  # when each permit was granted, on this process's clock
    end = time.monotonic() + 30
    async with asyncio.timeout(90):
        await asyncio.gather(
            *(demand(lim.acquire, end, sent) for lim in limiters for _ in range(16))
        )
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
    waited = await asyncio.wait_for(second.acquire(), 30)
    # Held by the pause (the lower bound); the upper one only says nothing else held it for
    # long, with room for a loaded machine.
    assert 0.8 <= waited <= 5
    assert second.paused_for() == 0


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

    async with asyncio.timeout(60):
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


async def test_a_redis_that_stops_answering_costs_one_timeout_then_the_fallback(
    tmp_path: Path,
) -> None:
    """A Redis that hangs (SIGSTOP: connections open, no answer): the first call waits for
    its timeout, once; every call after it goes to the fallback without a round trip, until
    the probe finds Redis serving the scripts again."""
    with private_redis(tmp_path / "redis") as redis:
        link = link_to(redis.url, replicas=2)
        channel = keys()
        limiter = FleetLimiter(RedisPermits(link, channel, 1000, 10), link, 1000, 10)
        await asyncio.wait_for(limiter.acquire(), 10)
        redis.freeze()
        try:
            grants = link.round_trips["grant"]
            started = time.monotonic()
            await asyncio.wait_for(limiter.acquire(), 10)
            first = time.monotonic() - started
            assert not link.shared
            assert link.round_trips["grant"] == grants + 1  # one call waited for its timeout
            for _ in range(10):
                await asyncio.wait_for(limiter.acquire(), 10)
            asked_meanwhile = link.round_trips["grant"] - grants - 1
        finally:
            redis.thaw()
        started = time.monotonic()
        back = await eventually(lambda: link.shared, within=15)
        recovered = time.monotonic() - started
        await link.close()
    print(f"\nfirst call on a hung Redis {first:.2f} s; back {recovered:.2f} s after it answered")
    # Bounded by the 0.5 s timeout, not by a socket's default or forever; the margin is for
    # an event loop on a loaded 2-core machine.
    assert first < 0.5 + 2
    assert asked_meanwhile == 0  # the fallback's permits asked nothing of Redis
    assert back, f"not back {recovered:.1f} s after Redis answered again"


async def test_one_channels_wrongly_typed_key_keeps_only_that_channel_on_its_share(
    links: Links, redis_url: str
) -> None:
    """Another program wrote a hash where a channel's rate lives: the script's WRONGTYPE takes
    that channel to its fallback alone; the link and every other channel stay fleet-wide."""
    [link] = links(1)
    broken, healthy = keys("broken"), keys("healthy")
    raw = Redis.from_url(redis_url)
    try:
        await raw.hset(broken.rate, mapping={"not": "a number"})
        views = [ChannelLink(link, "broken"), ChannelLink(link, "healthy")]
        limiters = [
            FleetLimiter(RedisPermits(view, k, 100, 10), view, 100, 10)
            for view, k in zip(views, (broken, healthy), strict=True)
        ]
        with capture_logs() as logs:
            for _ in range(5):
                for limiter in limiters:
                    await asyncio.wait_for(limiter.acquire(), 10)
        assert link.shared
        assert [view.shared for view in views] == [False, True]
        assert await raw.exists(healthy.rate)  # the healthy channel's state is in Redis
        [line] = [e for e in logs if e["event"] == "rate_limiter.channel_fallback"]
        assert line["channel"] == "broken"
        assert "WRONGTYPE" in line["reason"]
    finally:
        await raw.delete(broken.rate)
        await raw.aclose()


async def test_a_user_without_the_permissions_is_said_once_with_the_fix(tmp_path: Path) -> None:
    """A Redis user that may not run scripts: NOPERM is an operator's problem, not an outage.
    Said once at error level with the ACL to grant; the limits stay on the fallback (the
    probe's script is refused too), never flapping back."""
    with private_redis(tmp_path / "redis") as redis:
        admin = Redis.from_url(redis.url)
        try:
            await admin.execute_command(
                "ACL", "SETUSER", "limits", "on", ">secret-pw", "~*", "+@all", "-evalsha"
            )
        finally:
            await admin.aclose()
        url = f"redis://limits:secret-pw@127.0.0.1:{redis.port}/0"
        link = link_to(url, replicas=2)
        limiter = FleetLimiter(RedisPermits(link, keys(), 100, 10), link, 100, 10)
        with capture_logs() as logs:
            for _ in range(20):
                await asyncio.wait_for(limiter.acquire(), 10)
            probes = link.round_trips["probe"]
            assert await eventually(lambda: link.round_trips["probe"] > probes, within=15)
        assert not link.shared
        await link.close()
    fallbacks = [e for e in logs if e["event"] == "rate_limiter.fallback"]
    assert [e["log_level"] for e in fallbacks] == ["error"]
    assert "ACL" in fallbacks[0]["fix"]
    assert "secret-pw" not in repr(logs)
    assert not [e for e in logs if e["event"] == "rate_limiter.recovered"]
