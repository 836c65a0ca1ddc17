"""Every channel's limits held in Redis: one client, one replica count, parts per channel."""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Final, Protocol

import structlog

from consumer.attributes.urls import shown_url
from consumer.catalog import Channel
from consumer.config import ServiceConfig
from consumer.limits import (
    ChannelLimits,
    ChannelPacing,
    OnChange,
    local_breaker,
    probe_timeout,
)
from consumer.ratelimit import LocalLimiter, RateLimiter
from consumer.redis_health import RedisHealth
from consumer.redisclient import open_redis
from consumer.secrets import read_secret

from .breaker import FleetBreaker
from .circuit import RedisCircuit
from .gate import HOLD, FleetGate
from .leases import RedisLeases
from .limiter import FleetLimiter
from .link import WAIT_MAX, RedisLink
from .permits import RedisPermits
from .replicas import GroupMembers
from .shared import ChannelKeys

log = structlog.get_logger(__name__)

# Round trips at once: a grant and a lease request per channel, plus background writes.
_MAX_CONNECTIONS: Final = 64
# Blocking waits at once: at most one per channel whose concurrency cap is reached.
_MAX_BLOCKING: Final = 128
# A crashed holder's lease outlives the channel's timeout by this much besides its hold.
_LEASE_MARGIN_SECONDS: Final = 2.0


class _Closable(Protocol):
    async def close(self) -> None: ...


class FleetLimits:
    def __init__(self, config: ServiceConfig, link: RedisLink, members: GroupMembers) -> None:
        self._config = config
        self._link = link
        self._members = members
        # Names this process's leases and probes in Redis, for whoever looks.
        self._replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._parts: list[_Closable] = []

    @classmethod
    def open(
        cls,
        config: ServiceConfig,
        environ: Mapping[str, str] | None = None,
        health: RedisHealth | None = None,
    ) -> FleetLimits:
        settings = config.rate_limiter
        assert settings.url is not None  # check-config requires it with backend redis
        env = os.environ if environ is None else environ
        password = read_secret(settings.password_env, settings.password_file, env) or None
        options = functools.partial(
            open_redis,
            settings.url,
            timeout_seconds=settings.timeout_seconds,
            password=password,
            ca_bundle=settings.ca_bundle,
            retry_once=False,  # a retry would double the bound a delivery may wait
        )
        client = options(max_connections=_MAX_CONNECTIONS)
        blocking = options(
            max_connections=_MAX_BLOCKING,
            reply_timeout_seconds=WAIT_MAX + settings.timeout_seconds,
        )
        members = GroupMembers(config.kafka, environ)
        members.start()
        link = RedisLink(
            client,
            timeout_seconds=settings.timeout_seconds,
            replicas=members.count,
            shown_url=shown_url(settings.url),
            blocking=blocking,
            health=health,
        )
        return cls(config, link, members)

    def _keys(self, channel: Channel) -> ChannelKeys:
        return ChannelKeys(
            self._config.rate_limiter.key_prefix, self._config.kafka.group_id, channel.name
        )

    def for_channel(self, channel: Channel, on_change: OnChange) -> ChannelLimits:
        pacing = self.pacing(channel)
        settings = self._config.retry.circuit_breaker
        timeout = probe_timeout(channel)
        breaker = FleetBreaker(
            RedisCircuit(
                self._link,
                self._keys(channel),
                failures=settings.failures,
                cooldown_seconds=settings.cooldown_seconds,
                max_cooldown_seconds=settings.max_cooldown_seconds,
                probe_timeout=timeout,
                holder=self._replica,
            ),
            self._link,
            local_breaker(channel, settings, on_change),
            cooldown_seconds=settings.cooldown_seconds,
            max_cooldown_seconds=settings.max_cooldown_seconds,
            probe_timeout=timeout,
            on_change=on_change,
        )
        self._parts.append(breaker)
        return ChannelLimits(pacing.limiter, pacing.gate, breaker)

    def pacing(self, channel: Channel) -> ChannelPacing:
        link, keys = self._link, self._keys(channel)
        limiter: RateLimiter
        if channel.rate_limit is None:
            limiter = LocalLimiter()  # no rate to share; a receiver's pause holds per replica
        else:
            rate, burst = channel.rate_limit.per_second, channel.rate_limit.capacity
            limiter = fleet_limiter = FleetLimiter(
                RedisPermits(link, keys, rate, burst), link, rate, burst
            )
            self._parts.append(fleet_limiter)
        cap = channel.max_concurrency
        lease_ttl = channel.timeout_seconds + HOLD + _LEASE_MARGIN_SECONDS
        gate = FleetGate(RedisLeases(link, keys, cap, lease_ttl), link, cap, holder=self._replica)
        self._parts.append(gate)
        return ChannelPacing(limiter, gate)

    async def close(self) -> None:
        for part in self._parts:
            await part.close()
        await self._members.close()
        log.info("rate_limiter.stopped", round_trips=dict(self._link.round_trips))
        await self._link.close()
