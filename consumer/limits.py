"""The one place that picks where channel limits live, from `rate_limiter.backend`.

`local`: each process holds its own rate limit and circuit; its lane's workers are its
concurrency cap. `redis`: all three hold across the replicas of the consumer group
(`consumer.fleet`). Either way a lane gets a `RateLimiter`, a `ConcurrencyGate` and a `Breaker`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .breaker import Breaker, CircuitBreaker, State
from .catalog import Channel
from .concurrency import UNLIMITED, ConcurrencyGate
from .config import CircuitBreakerConfig, ServiceConfig
from .lanes import limiter_for
from .ratelimit import RateLimiter

OnChange = Callable[[State, int, float], None]


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    limiter: RateLimiter
    gate: ConcurrencyGate
    breaker: Breaker


class Limits(Protocol):
    def for_channel(self, channel: Channel, on_change: OnChange) -> ChannelLimits:
        """The channel's parts; `on_change` hears every circuit transition."""

    async def close(self) -> None: ...


def local_breaker(
    channel: Channel, settings: CircuitBreakerConfig, on_change: OnChange
) -> CircuitBreaker:
    return CircuitBreaker(
        settings.failures,
        settings.cooldown_seconds,
        settings.max_cooldown_seconds,
        probe_timeout=channel.timeout_seconds + 1,  # the probe's own request, answered or not
        on_change=on_change,
    )


class LocalLimits:
    def __init__(self, circuit: CircuitBreakerConfig) -> None:
        self._circuit = circuit

    def for_channel(self, channel: Channel, on_change: OnChange) -> ChannelLimits:
        return ChannelLimits(
            limiter_for(channel), UNLIMITED, local_breaker(channel, self._circuit, on_change)
        )

    async def close(self) -> None:
        return None


def open_limits(config: ServiceConfig, environ: Mapping[str, str] | None = None) -> Limits:
    """Nothing connects yet: a Redis that is down shows as the fallback, not as a failed start."""
    if config.rate_limiter.backend == "redis":
        from .fleet.limits import FleetLimits  # a local deployment never loads the client

        return FleetLimits.open(config, environ)
    return LocalLimits(config.retry.circuit_breaker)
