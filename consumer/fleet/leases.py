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

    async def give_back(self, holder: str) -> None:
        """Free `holder`'s place, and wake one replica waiting in `freed`."""

    async def freed(self, within: float) -> bool:
        """Wait up to `within` seconds for a lease of the channel to be given back anywhere
        in the fleet (a hint to try `take` again, not a grant)."""


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

# KEYS: leases, freed. ARGV: holder, limit, ttl (ms). A token per lease given back wakes one
# waiting replica (BLPOP); tokens nobody waited for are few (at most `limit`) and expire.
_GIVE_BACK = Script.of(
    "release",
    """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], 1)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
""",
)


class RedisLeases:
    def __init__(self, link: RedisLink, keys: ChannelKeys, limit: int, ttl_seconds: float) -> None:
        self._link = link
        self._keys = (keys.leases, keys.freed)
        self._limit = limit
        self._ttl_ms = max(1, round(ttl_seconds * 1000))

    async def take(self, holder: str) -> bool:
        args = (holder, self._limit, self._ttl_ms)
        return bool(await self._link.run(_TAKE, self._keys[:1], args))

    async def give_back(self, holder: str) -> None:
        await self._link.run(_GIVE_BACK, self._keys, (holder, self._limit, self._ttl_ms))

    async def freed(self, within: float) -> bool:
        return await self._link.wait_pop(self._keys[1], within)
