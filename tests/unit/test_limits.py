"""Where limits live is chosen in one place: the local parts, or the fleet-wide ones named per
deployment and channel; and how the live replicas are counted from the consumer group."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from structlog.testing import capture_logs

from consumer.breaker import CircuitBreaker, State
from consumer.catalog import Catalog
from consumer.concurrency import UNLIMITED
from consumer.config import ServiceConfig, parse_config
from consumer.fleet.breaker import FleetBreaker
from consumer.fleet.gate import FleetGate
from consumer.fleet.limiter import FleetLimiter
from consumer.fleet.replicas import members_with_partitions
from consumer.fleet.shared import ChannelKeys
from consumer.limit_backends import open_limits
from consumer.limits import LocalLimits
from consumer.ratelimit import LocalLimiter


def config(**rate_limiter: Any) -> ServiceConfig:
    document = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "group_id": "deployment-a"},
        "channels": [
            {"name": "limited", "url": "https://a.example.com/", "rate_limit": {"per_second": 5}},
            {"name": "open", "url": "https://b.example.com/"},
        ],
    }
    if rate_limiter:
        document["rate_limiter"] = rate_limiter
    return parse_config(document, "test", {})


def ignore(_state: State, _failures: int, _cooldown: float) -> None:
    return None


def test_local_limits_are_the_process_own() -> None:
    cfg = config()
    limits = open_limits(cfg)
    assert isinstance(limits, LocalLimits)
    parts = limits.for_channel(Catalog.from_config(cfg, {}).channels["limited"], ignore)
    assert isinstance(parts.limiter, LocalLimiter)
    assert parts.gate is UNLIMITED
    assert isinstance(parts.breaker, CircuitBreaker)


async def test_redis_limits_are_built_without_connecting() -> None:
    # Nothing listens on port 1, for Redis or Kafka: building must not need either.
    cfg = config(backend="redis", url="redis://127.0.0.1:1/0")
    limits = open_limits(cfg)
    channels = Catalog.from_config(cfg, {}).channels
    limited = limits.for_channel(channels["limited"], ignore)
    unlimited = limits.for_channel(channels["open"], ignore)
    assert isinstance(limited.limiter, FleetLimiter)
    assert isinstance(unlimited.limiter, LocalLimiter)  # no rate to share
    assert isinstance(limited.gate, FleetGate)
    assert isinstance(limited.breaker, FleetBreaker)
    await limits.close()


def test_keys_name_the_deployment_and_the_channel() -> None:
    a = ChannelKeys("wc:", "deployment-a", "coupons")
    b = ChannelKeys("wc:", "deployment-b", "coupons")
    assert a.rate == "wc:{deployment-a/coupons}:rate"
    assert len({a.rate, a.pause, a.leases, a.circuit, a.probe}) == 5
    assert a.rate != b.rate  # two deployments on one Redis never share a limit


@pytest.mark.parametrize(
    ("first", "second"),
    [(("g:x", "c"), ("g", "x:c")), (("g/x", "c"), ("g", "x/c")), (("g}", "c"), ("g", "}c"))],
)
def test_no_two_group_and_channel_pairs_share_a_key(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert ChannelKeys("p:", *first).rate != ChannelKeys("p:", *second).rate


def test_every_key_of_a_channel_has_one_hash_tag() -> None:
    keys = ChannelKeys("p:", "g{1}", "c{2}")
    tags = {key[key.index("{") + 1 : key.index("}")] for key in (keys.rate, keys.probe)}
    assert len(tags) == 1


def _member(assigned: list[tuple[str, list[int]]]) -> tuple[str, str, str, bytes, bytes]:
    raw = ConsumerProtocolMemberAssignment(0, assigned, b"").encode() if assigned else b""
    return ("member", "client", "/127.0.0.1", b"", raw)


def test_replicas_are_the_members_that_hold_partitions() -> None:
    described = (
        0,
        "group",
        "Stable",
        "consumer",
        "roundrobin",
        [
            _member([("events", [0])]),
            _member([("events", [1, 2])]),
            _member([]),
            _member([("events", [])]),
        ],
    )
    assert members_with_partitions(described) == 2


async def test_a_redis_that_refuses_means_the_fallback_said_once_without_the_password() -> None:
    secret = "hunter2-limits"
    cfg = config(backend="redis", url=f"redis://:{secret}@127.0.0.1:1/0")
    limits = open_limits(cfg)
    parts = limits.for_channel(Catalog.from_config(cfg, {}).channels["limited"], ignore)
    with capture_logs() as logs:
        waited = [await parts.limiter.acquire() for _ in range(3)]
        lease = await parts.gate.acquire()
        lease.release()
        assert await parts.breaker.admit()
    await limits.close()
    assert max(waited) < 1  # refused at once, then the replica's share (5/s, burst 5)
    [line] = [entry for entry in logs if entry["event"] == "rate_limiter.fallback"]
    # No group counted yet (no Kafka here): as many replicas as the configured partitions,
    # the most that could hold one, never fewer.
    assert line["divisor"] == cfg.kafka.topic_partitions == 3
    assert "//***@127.0.0.1:1" in line["redis"]
    assert secret not in repr(logs)
