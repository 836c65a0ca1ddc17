"""A channel's concurrent requests across the fleet: leases in one Redis sorted set.

Each lease is a member (its holder) scored by its expiry on Redis's clock, so a replica that
crashed holding leases gives them back by itself after the channel's timeout plus a margin.
Taking and giving back are one script each: the count and the cap are checked atomically.
"""

from __future__ import annotations

from typing import Protocol

from .link import RedisLink, Script
from .shared import ChannelKeys


class LeaseStore(Protocol):
    async def take(self, holder: str) -> bool:
        """One place for `holder` if the channel has one free; FleetUnavailable if unknown."""

    async def give_back(self, holder: str) -> None: ...


# KEYS: leases. ARGV: holder, limit, ttl (ms).
_TAKE = Script.of(
    "lease",
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
""",
)

_GIVE_BACK = Script.of("release", "return redis.call('ZREM', KEYS[1], ARGV[1])")


class RedisLeases:
    def __init__(self, link: RedisLink, keys: ChannelKeys, limit: int, ttl_seconds: float) -> None:
        self._link = link
        self._keys = (keys.leases,)
        self._limit = limit
        self._ttl_ms = max(1, round(ttl_seconds * 1000))

    async def take(self, holder: str) -> bool:
        return bool(await self._link.run(_TAKE, self._keys, (holder, self._limit, self._ttl_ms)))

    async def give_back(self, holder: str) -> None:
        await self._link.run(_GIVE_BACK, self._keys, (holder,))
