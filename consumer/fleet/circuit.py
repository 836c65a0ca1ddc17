"""A channel's circuit state for the whole fleet: one Redis hash, changed only by scripts.

The hash holds the state, the failures in a row, the current cool-down, when the open circuit
may be probed (Redis's clock) and a version that every change increments, so a replica never
goes back to an older state it hears late. The probe is a key set NX with an expiry: exactly
one replica probes, and if it dies another may after the expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from consumer.breaker import State

from .link import RedisLink, Script
from .shared import ChannelKeys


@dataclass(frozen=True, slots=True)
class Circuit:
    state: State
    failures: int  # in a row, fleet-wide
    cooldown: float  # seconds the circuit stays open before the next probe
    open_for: float  # seconds until the probe may go (when open); 0 otherwise
    probing: bool  # a replica holds the probe
    version: int  # increases with every change


class CircuitStore(Protocol):
    async def read(self) -> Circuit: ...

    async def failed(self, probe: bool) -> Circuit:
        """A retryable failure; `probe`: the half-open probe's own (the cool-down doubles)."""

    async def succeeded(self) -> Circuit:
        """The receiver answered: close, forget the failures."""

    async def claim_probe(self) -> tuple[bool, Circuit]:
        """Whether this caller is the one probe of an open circuit whose cool-down is over."""


# ARGV: base cooldown (ms), max cooldown (ms), failures to open, probe expiry (ms), then one
# argument of the script's own. KEYS: circuit, probe.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'cooldown', 'open_until', 'version')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
local cooldown = tonumber(h[3]) or tonumber(ARGV[1])
local open_until = tonumber(h[4]) or 0
local version = tonumber(h[5]) or 0
local function save()
  version = version + 1
  redis.call('HSET', KEYS[1], 'state', state, 'failures', failures, 'cooldown', cooldown,
    'open_until', open_until, 'version', version)
  redis.call('PEXPIRE', KEYS[1], 604800000)
end
local function reply(extra)
  return {state, failures, cooldown, math.max(0, open_until - now),
    redis.call('EXISTS', KEYS[2]), version, extra}
end
"""

_READ = Script.of("circuit_read", _PRELUDE + "return reply(0)")

_FAILED = Script.of(
    "circuit_failed",
    _PRELUDE
    + """
failures = failures + 1
if ARGV[5] == '1' and state == 'half_open' then
  cooldown = math.min(cooldown * 2, tonumber(ARGV[2]))
  state = 'open'
  open_until = now + cooldown
  redis.call('DEL', KEYS[2])
elseif state == 'open' then
  open_until = now + cooldown
elseif state == 'closed' and failures >= tonumber(ARGV[3]) then
  state = 'open'
  open_until = now + cooldown
end
save()
return reply(0)
""",
)

_SUCCEEDED = Script.of(
    "circuit_succeeded",
    _PRELUDE
    + """
if state ~= 'closed' or failures ~= 0 or cooldown ~= tonumber(ARGV[1]) then
  state, failures, cooldown, open_until = 'closed', 0, tonumber(ARGV[1]), 0
  redis.call('DEL', KEYS[2])
  save()
end
return reply(0)
""",
)

_CLAIM = Script.of(
    "circuit_claim",
    _PRELUDE
    + """
if (state == 'open' and now >= open_until) or state == 'half_open' then
  if redis.call('SET', KEYS[2], ARGV[5], 'NX', 'PX', tonumber(ARGV[4])) then
    state = 'half_open'
    save()
    return reply(1)
  end
end
return reply(0)
""",
)


class RedisCircuit:
    def __init__(
        self,
        link: RedisLink,
        keys: ChannelKeys,
        *,
        failures: int,
        cooldown_seconds: float,
        max_cooldown_seconds: float,
        probe_timeout: float,
        holder: str,
    ) -> None:
        self._link = link
        self._keys = (keys.circuit, keys.probe)
        self._args = (
            round(cooldown_seconds * 1000),
            round(max(cooldown_seconds, max_cooldown_seconds) * 1000),
            failures,
            round(probe_timeout * 1000),
        )
        self._holder = holder

    async def read(self) -> Circuit:
        return _circuit(await self._link.run(_READ, self._keys, (*self._args, "")))

    async def failed(self, probe: bool) -> Circuit:
        args = (*self._args, "1" if probe else "0")
        return _circuit(await self._link.run(_FAILED, self._keys, args))

    async def succeeded(self) -> Circuit:
        return _circuit(await self._link.run(_SUCCEEDED, self._keys, (*self._args, "")))

    async def claim_probe(self) -> tuple[bool, Circuit]:
        reply = await self._link.run(_CLAIM, self._keys, (*self._args, self._holder))
        return bool(int(reply[6])), _circuit(reply)


def _circuit(reply: list[Any]) -> Circuit:
    state, failures, cooldown, open_for, probing, version, _ = reply
    return Circuit(
        State(state.decode() if isinstance(state, bytes) else state),
        int(failures),
        int(cooldown) / 1000,
        int(open_for) / 1000,
        bool(int(probing)),
        int(version),
    )
