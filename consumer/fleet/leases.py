"""A channel's concurrent requests across the fleet: leases in one Redis sorted set.

Each lease is a member (its holder) scored by its expiry on Redis's clock, so a replica that
crashed holding leases gives them back by itself after the channel's timeout plus a margin.
Taking and giving back are one script each: the count and the cap are checked atomically.
A take that finds the cap reached marks the channel wanted for a second; both scripts say
whether it is, so a replica keeps idle leases only while nobody else waits for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .link import Runner, Script
from .shared import ChannelKeys


class LeaseStore(Protocol):
    async def take(self, holder: str) -> tuple[bool, bool]:
        """One place for `holder` if the channel has one free, and whether replicas wait for
        one (granted, wanted); FleetUnavailable if unknown."""

    async def give_back(self, holder: str) -> bool:
        """Free `holder`'s place and wake one replica waiting in `freed`; whether replicas
        wait for one."""

    async def freed(self, within: float) -> bool:
        """Wait up to `within` seconds for a lease of the channel to be given back anywhere
        in the fleet (a hint to try `take` again, not a grant)."""

    async def settle(self, dropped: Sequence[str], running: Sequence[str]) -> bool:
        """After an outage: free the places of `dropped` (leases that may or may not have
        been taken or given back while Redis did not answer) and count `running` (requests
        that went out on the fallback and still run) whatever the cap; whether replicas
        wait for leases."""


_WANTED_MS = 1000  # how long a refused take marks the channel wanted

# KEYS: leases, freed, wanted. ARGV: holder, limit, ttl (ms).
# Returns 0: refused; 1: granted; 2: granted, and others wait for leases.
_TAKE = Script.of(
    "lease",
    f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[3], 1, 'PX', {_WANTED_MS})
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1 + redis.call('EXISTS', KEYS[3])
""",
)

# KEYS: leases, freed, wanted. ARGV: holder, limit, ttl (ms). A token per lease given back
# wakes one waiting replica (BLPOP); tokens nobody waited for are few (at most `limit`) and
# expire. Returns whether others wait for leases.
_GIVE_BACK = Script.of(
    "release",
    """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], 1)
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return redis.call('EXISTS', KEYS[3])
""",
)


# KEYS: leases, freed, wanted. ARGV: limit, ttl (ms), how many to drop, then the holders to
# drop, then those to count. Returns whether others wait for leases.
_SETTLE = Script.of(
    "settle",
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dropping = tonumber(ARGV[3])
for i = 4, 3 + dropping do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], 1)
  end
end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
for i = 4 + dropping, #ARGV do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[i])
end
if #ARGV > 3 + dropping then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return redis.call('EXISTS', KEYS[3])
""",
)


class RedisLeases:
    def __init__(self, link: Runner, keys: ChannelKeys, limit: int, ttl_seconds: float) -> None:
        self._link = link
        self._keys = (keys.leases, keys.freed, keys.wanted)
        self._limit = limit
        self._ttl_ms = max(1, round(ttl_seconds * 1000))

    async def take(self, holder: str) -> tuple[bool, bool]:
        answer = int(await self._link.run(_TAKE, self._keys, self._args(holder)))
        return answer > 0, answer != 1  # refused: this caller waits, at least

    async def give_back(self, holder: str) -> bool:
        return bool(await self._link.run(_GIVE_BACK, self._keys, self._args(holder)))

    def _args(self, holder: str) -> tuple[str, int, int]:
        return holder, self._limit, self._ttl_ms

    async def freed(self, within: float) -> bool:
        return await self._link.wait_pop(self._keys[1], within)

    async def settle(self, dropped: Sequence[str], running: Sequence[str]) -> bool:
        args = (self._limit, self._ttl_ms, len(dropped), *dropped, *running)
        return bool(await self._link.run(_SETTLE, self._keys, args))
