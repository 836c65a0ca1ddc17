"""A channel's circuit state for the whole fleet: one Redis hash, changed only by scripts.

The hash holds the state, the failures in a row, the current cool-down, when the open circuit
may be probed (Redis's clock) and a version that every change increments, so a replica never
goes back to an older state it hears late. The probe is a key set NX with an expiry: exactly
one replica probes, and if it dies (or its answer is lost) the circuit counts it as a failed
probe once the key expired: the next probe waits a whole cool-down. Only the holder of the
claim settles a half-open circuit (compare and delete); `reset` closes it for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from consumer.breaker import State

from .link import Runner, Script
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

    async def failed(self, probe: str | None) -> Circuit:
        """A retryable failure; `probe`: the holder of the claim it was sent under, if any.
        Only the probe that still holds the claim settles a half-open circuit (the cool-down
        doubles); any other failure counts towards opening."""

    async def succeeded(self, probe: str | None) -> Circuit:
        """The receiver answered. The probe that holds the claim closes the circuit; any
        other answer forgets the failures of a closed one and leaves an open one open."""

    async def claim_probe(self, holder: str) -> tuple[bool, Circuit]:
        """Whether `holder` is the one probe of an open circuit whose cool-down is over."""

    async def reset(self) -> Circuit:
        """Close the circuit for the whole fleet and forget its failures (an operator's)."""


# ARGV: base cooldown (ms), max cooldown (ms), failures to open, probe expiry (ms), then one
# argument of the script's own (a probe's holder, or ''). KEYS: circuit, probe.
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
local function reopen()
  cooldown = math.min(cooldown * 2, tonumber(ARGV[2]))
  state = 'open'
  open_until = now + cooldown
end
-- The probe's own result: its holder still holds the claim. Compare and delete.
local function settles()
  if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then
    redis.call('DEL', KEYS[2])
    return state == 'half_open'
  end
  return false
end
"""

_READ = Script.of("circuit_read", _PRELUDE + "return reply(0)")

_FAILED = Script.of(
    "circuit_failed",
    _PRELUDE
    + """
failures = failures + 1
if settles() then
  reopen()
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
if settles() or (state == 'closed' and failures ~= 0) then
  state, failures, cooldown, open_until = 'closed', 0, tonumber(ARGV[1]), 0
  save()
end
return reply(0)
""",
)

_CLAIM = Script.of(
    "circuit_claim",
    _PRELUDE
    + """
if state == 'half_open' and redis.call('EXISTS', KEYS[2]) == 0 then
  -- Its probe went without a word (its replica died, its answer was lost): a failed probe,
  -- so the next one waits a whole cool-down, never goes at once.
  reopen()
  save()
elseif state == 'open' and now >= open_until then
  if redis.call('SET', KEYS[2], ARGV[5], 'NX', 'PX', tonumber(ARGV[4])) then
    state = 'half_open'
    save()
    return reply(1)
  end
end
return reply(0)
""",
)

_RESET = Script.of(
    "circuit_reset",
    _PRELUDE
    + """
redis.call('DEL', KEYS[2])
state, failures, cooldown, open_until = 'closed', 0, tonumber(ARGV[1]), 0
save()
return reply(0)
""",
)


class RedisCircuit:
    def __init__(
        self,
        link: Runner,
        keys: ChannelKeys,
        *,
        failures: int,
        cooldown_seconds: float,
        max_cooldown_seconds: float,
        probe_timeout: float,
    ) -> None:
        self._link = link
        self._keys = (keys.circuit, keys.probe)
        self._args = (
            round(cooldown_seconds * 1000),
            round(max(cooldown_seconds, max_cooldown_seconds) * 1000),
            failures,
            round(probe_timeout * 1000),
        )

    async def _run(self, script: Script, extra: str = "") -> list[Any]:
        answer: list[Any] = await self._link.run(script, self._keys, (*self._args, extra))
        return answer

    async def read(self) -> Circuit:
        return _circuit(await self._run(_READ))

    async def failed(self, probe: str | None) -> Circuit:
        return _circuit(await self._run(_FAILED, probe or ""))

    async def succeeded(self, probe: str | None) -> Circuit:
        return _circuit(await self._run(_SUCCEEDED, probe or ""))

    async def claim_probe(self, holder: str) -> tuple[bool, Circuit]:
        reply = await self._run(_CLAIM, holder)
        return bool(int(reply[6])), _circuit(reply)

    async def reset(self) -> Circuit:
        return _circuit(await self._run(_RESET))


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
