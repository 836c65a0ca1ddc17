"""The one place that picks where channel limits live, from `rate_limiter.backend`:
`local` (each process its own) or `redis` (held across the replicas, `consumer.fleet`)."""

from __future__ import annotations

from collections.abc import Mapping

from .config import ServiceConfig
from .limits import Limits, LocalLimits
from .observer import Observer
from .redis_health import RedisHealth


def open_limits(
    config: ServiceConfig,
    environ: Mapping[str, str] | None = None,
    health: RedisHealth | None = None,
    observer: Observer | None = None,
) -> Limits:
    """Nothing connects yet: a Redis that is down shows as the fallback, not as a failed start.
    `health` hears when the fleet falls back and recovers; `observer` tells the fleet's
    replica count of each rebalance."""
    if config.rate_limiter.backend == "redis":
        from .fleet.limits import FleetLimits  # a local deployment never loads the client

        return FleetLimits.open(config, environ, health, observer)
    return LocalLimits(config.retry.circuit_breaker)
