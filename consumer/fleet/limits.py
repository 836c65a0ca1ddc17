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
from consumer.observer import Observer
from consumer.ratelimit import LocalLimiter, RateLimiter
from consumer.redis_health import RedisHealth
from consumer.redisclient import open_redis
from consumer.secrets import read_secret

from .breaker import FleetBreaker
from .channel_link import ChannelLink
from .circuit import RedisCircuit
from .gate import HOLD, FleetGate
from .leases import RedisLeases
from .limiter import FleetLimiter
from .link import WAIT_MAX, RedisLink
from .permits import RedisPermits
from .replicas import GroupMembers, RedisCountMemory
from .shared import ChannelKeys, group_key

log = structlog.get_logger(__name__)

# A crashed holder's lease outlives the channel's timeout by this much besides its hold and
# the wait for a fresh permit that a request may do holding it (at most cap / rate).
_LEASE_MARGIN_SECONDS: Final = 2.0


def lease_ttl(channel: Channel) -> float:
    """How long a lease lives in Redis unless given back: what its request may take."""
    permit_wait = 0.0
    if channel.rate_limit is not None:
        permit_wait = channel.max_concurrency / channel.rate_limit.per_second
    return channel.timeout_seconds + HOLD + _LEASE_MARGIN_SECONDS + permit_wait


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
        self._views: dict[str, ChannelLink] = {}
        link.provision(len(config.channels))

    @classmethod
    def open(
        cls,
        config: ServiceConfig,
        environ: Mapping[str, str] | None = None,
        health: RedisHealth | None = None,
        observer: Observer | None = None,
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
        # Sized by `provision` for the channels; a reload's new channels add to it.
        client = options(max_connections=1)
        blocking = options(
            max_connections=1, reply_timeout_seconds=WAIT_MAX + settings.timeout_seconds
        )
        prefix, group = settings.key_prefix, config.kafka.group_id
        count: list[GroupMembers] = []
        link = RedisLink(
            client,
            timeout_seconds=settings.timeout_seconds,
            replicas=lambda: count[0].count(),
            shown_url=shown_url(settings.url),
            scratch_key=group_key(prefix, group, "probe"),
            blocking=blocking,
            health=health,
        )
        memory = RedisCountMemory(link, group_key(prefix, group, "replicas"))
        members = GroupMembers(config.kafka, environ, memory=memory)
        count.append(members)
        if observer is not None:
            observer.add(members.heard)  # a rebalance here: count the group again
        members.start()
        return cls(config, link, members)

    def _keys(self, channel: Channel) -> ChannelKeys:
        return ChannelKeys(
            self._config.rate_limiter.key_prefix, self._config.kafka.group_id, channel.name
        )

    def _view(self, channel: Channel) -> ChannelLink:
        """One view per channel name, shared by its parts and those a reload rebuilds."""
        if channel.name not in self._views:
            self._views[channel.name] = ChannelLink(self._link, channel.name)
            self._link.provision(len(self._views))
        return self._views[channel.name]

    def for_channel(self, channel: Channel, on_change: OnChange) -> ChannelLimits:
        pacing = self.pacing(channel)
        settings = self._config.retry.circuit_breaker
        timeout = probe_timeout(channel)
        view = self._view(channel)
        breaker = FleetBreaker(
            RedisCircuit(
                view,
                self._keys(channel),
                failures=settings.failures,
                cooldown_seconds=settings.cooldown_seconds,
                max_cooldown_seconds=settings.max_cooldown_seconds,
                probe_timeout=timeout,
            ),
            view,
            local_breaker(channel, settings, on_change),
            cooldown_seconds=settings.cooldown_seconds,
            max_cooldown_seconds=settings.max_cooldown_seconds,
            probe_timeout=timeout,
            holder=self._replica,
            on_change=on_change,
        )
        self._parts.append(breaker)
        return ChannelLimits(pacing.limiter, pacing.gate, breaker)

    def pacing(self, channel: Channel) -> ChannelPacing:
        link, keys = self._view(channel), self._keys(channel)
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
        leases = RedisLeases(link, keys, cap, lease_ttl(channel))
        gate = FleetGate(leases, link, cap, holder=self._replica)
        self._parts.append(gate)
        return ChannelPacing(limiter, gate)

    async def close(self) -> None:
        for part in self._parts:
            await part.close()
        await self._members.close()
        log.info("rate_limiter.stopped", round_trips=dict(self._link.round_trips))
        await self._link.close()
