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
from .ratelimit import RateLimiter, limiter_for
from .redis_health import RedisHealth

OnChange = Callable[[State, int, float], None]


@dataclass(frozen=True, slots=True)
class ChannelPacing:
    """What paces a channel's requests; a reload that changes its limits builds new ones."""

    limiter: RateLimiter
    gate: ConcurrencyGate


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    limiter: RateLimiter
    gate: ConcurrencyGate
    breaker: Breaker


class Limits(Protocol):
    def for_channel(self, channel: Channel, on_change: OnChange) -> ChannelLimits:
        """The channel's parts; `on_change` hears every circuit transition."""

    def pacing(self, channel: Channel) -> ChannelPacing:
        """Only the limiter and the gate: what a reload replaces (the circuit stays)."""

    async def close(self) -> None: ...


def probe_timeout(channel: Channel) -> float:
    """How long a half-open probe may take: its own request, answered or not."""
    return channel.timeout_seconds + 1


def local_breaker(
    channel: Channel, settings: CircuitBreakerConfig, on_change: OnChange
) -> CircuitBreaker:
    return CircuitBreaker(
        settings.failures,
        settings.cooldown_seconds,
        settings.max_cooldown_seconds,
        probe_timeout=probe_timeout(channel),
        on_change=on_change,
    )


class LocalLimits:
    def __init__(self, circuit: CircuitBreakerConfig) -> None:
        self._circuit = circuit

    def for_channel(self, channel: Channel, on_change: OnChange) -> ChannelLimits:
        pacing = self.pacing(channel)
        breaker = local_breaker(channel, self._circuit, on_change)
        return ChannelLimits(pacing.limiter, pacing.gate, breaker)

    def pacing(self, channel: Channel) -> ChannelPacing:
        return ChannelPacing(limiter_for(channel), UNLIMITED)

    async def close(self) -> None:
        return None


def open_limits(
    config: ServiceConfig,
    environ: Mapping[str, str] | None = None,
    health: RedisHealth | None = None,
) -> Limits:
    """Nothing connects yet: a Redis that is down shows as the fallback, not as a failed start.
    `health` hears when the fleet falls back and recovers."""
    if config.rate_limiter.backend == "redis":
        from .fleet.limits import FleetLimits  # a local deployment never loads the client

        return FleetLimits.open(config, environ, health)
    return LocalLimits(config.retry.circuit_breaker)
