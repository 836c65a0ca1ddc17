"""What paces a channel: the `Limits` protocol, and its local implementation.

`local`: each process holds its own rate limit and circuit; its lane's workers are its
concurrency cap. The fleet-wide implementation is `consumer.fleet`; `consumer.limit_backends`
chooses. Either way a lane gets a `RateLimiter`, a `ConcurrencyGate` and a `Breaker`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .breaker import Breaker, CircuitBreaker, State
from .catalog import Channel
from .concurrency import UNLIMITED, ConcurrencyGate
from .config import CircuitBreakerConfig
from .ratelimit import RateLimiter, limiter_for

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
