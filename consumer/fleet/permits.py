"""Rate-limit permits of one channel for the whole fleet: GCRA in one Redis script.

The script reserves up to `count` consecutive slots at once, each with its own time, so a busy
channel pays one round trip for several requests. Time is Redis's clock (`TIME`), so the
replicas' clocks do not matter; state is two keys per channel and deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from .link import Runner, Script
from .shared import ChannelKeys

_MICRO: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Grant:
    slots: tuple[float, ...]  # seconds from the answer to each reserved slot, ascending
    next_free: float  # seconds from the answer until a further permit could be granted
    paused_for: float  # seconds left of a pause a receiver asked any replica for
    at: float  # when the store answered, in seconds on its own clock


class PermitSource(Protocol):
    async def grant(self, count: int, resume: bool = False) -> Grant:
        """Reserve up to `count` slots (at least one); raise FleetUnavailable if it cannot.
        `resume`: this replica comes back from its fallback, where it spent its share of the
        rate: no burst is left to grant."""

    async def pause(self, seconds: float) -> None:
        """Grant no slot before `seconds` from now, to any replica."""


# KEYS: tat, pause. ARGV: interval, tolerance, count, span (microseconds, except count),
# resume ('1' or '0'). tat is the theoretical arrival time of the next permit; a slot may run
# `tolerance` ahead of it (the burst). Slots after the first stay within `span` of it: a batch
# covers a short stretch of time, so what one replica reserved and does not use is little.
# A replica that resumes after its fallback takes the burst away: the fleet spent it there.
# Returns the pause left, the next free slot, Redis's time, then the slots (microseconds).
_GRANT = Script.of(
    "grant",
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local count, span = tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local paused = tonumber(redis.call('GET', KEYS[2])) or 0
if ARGV[5] == '1' then tat = math.max(tat, now + tolerance) end
local first = nil
local reply = {'', '', string.format('%d', now)}
for i = 1, count do
  local slot = math.max(now, tat - tolerance, paused)
  if first == nil then first = slot elseif slot - first > span then break end
  tat = math.max(tat, slot) + interval
  reply[#reply + 1] = string.format('%d', math.ceil(slot - now))
end
redis.call('SET', KEYS[1], string.format('%.3f', tat),
  'PX', math.ceil((tat - now + tolerance) / 1000) + 1000)
reply[1] = string.format('%d', math.max(0, math.ceil(paused - now)))
reply[2] = string.format('%d', math.max(0, math.ceil(tat - tolerance - now)))
return reply
""",
)

# KEYS: pause. ARGV: seconds (microseconds). Only ever extends a pause.
_PAUSE = Script.of(
    "pause",
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wanted = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1])) or 0
if wanted > current then
  redis.call('SET', KEYS[1], string.format('%d', wanted),
    'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 1
""",
)


class RedisPermits:
    def __init__(self, link: Runner, keys: ChannelKeys, per_second: float, burst: int) -> None:
        self._link = link
        self._keys = (keys.rate, keys.pause)
        self._interval = _MICRO / per_second
        self._tolerance = self._interval * (max(1, burst) - 1)

    async def grant(self, count: int, resume: bool = False) -> Grant:
        # One batch spans at most a fifth of a second of the channel's rate.
        span = max(self._interval, _MICRO / 5)
        args = (
            f"{self._interval:.3f}",
            f"{self._tolerance:.3f}",
            max(1, count),
            f"{span:.0f}",
            "1" if resume else "0",
        )
        reply = await self._link.run(_GRANT, self._keys, args)
        paused, free, at, *slots = (int(value) / _MICRO for value in reply)
        return Grant(tuple(slots), free, paused, at)

    async def pause(self, seconds: float) -> None:
        await self._link.run(_PAUSE, self._keys[1:], (f"{seconds * _MICRO:.0f}",))
