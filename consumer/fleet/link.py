"""The fleet-wide limits' one Redis client: scripts by EVALSHA, every call bounded and
counted, and the switch to the per-replica fallback when Redis stops answering.

A failed call is sorted (`trouble`): one channel's bad keys fall back that channel alone
(`channel_link`); anything else marks the link down at once (logged once,
`rate_limiter.fallback`) and every limit of the process falls back to its share. A background
probe, not the hot path, finds out when Redis serves the limits again: it runs a real script
on a scratch key, so a Redis that answers PING but refuses the scripts (a read-only replica, a
user without the permissions) never counts as back. The probe outlives every error of its
own, and a link that falls back again soon after a recovery is probed ever more slowly, so
the limits never flap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from consumer.redis_health import RedisHealth
from consumer.redisclient import raise_if_cancelled

from .shared import FleetUnavailable
from .trouble import Diagnosis, KeyTrouble, Trouble, diagnose

log = structlog.get_logger(__name__)
_USER: Final = "rate_limiter"  # how this link reports to the process's RedisHealth

WAIT_MAX: Final = 1.0  # seconds a blocking wait lasts at most (the blocking client allows it)
PROBE_FIRST: Final = 0.25  # seconds before the first probe of a Redis that stopped answering
PROBE_MAX: Final = 2.0  # the probe backs off to this while Redis is unreachable
# A Redis an operator must fix is probed this often at first, then ever more rarely.
MISCONFIGURED_FIRST: Final = 5.0
MISCONFIGURED_MAX: Final = 60.0
# Falling back again this soon after a recovery is a flap: the next probe waits 4x longer.
FLAP_WINDOW: Final = 30.0
FLAP_MAX: Final = 30.0
# Connections kept per channel beside the base: a grant, a take, a circuit read and writes.
_BASE_CONNECTIONS: Final = 16
_PER_CHANNEL: Final = 6


@dataclass(frozen=True, slots=True)
class Script:
    name: str  # for the round-trip counts
    source: str
    sha: str

    @classmethod
    def of(cls, name: str, source: str) -> Script:
        # SHA-1 is how Redis names a script, not a security measure.
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


class Runner(Protocol):
    """What the stores need of a link (the whole link, or one channel's view of it)."""

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any: ...

    async def wait_pop(self, key: str, seconds: float) -> bool: ...


# The recovery probe: a write by script, as every limit does.
_PROBE = Script.of("probe", "redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000) return 1")


class RedisLink:
    def __init__(
        self,
        client: Redis,
        *,
        timeout_seconds: float,
        replicas: Callable[[], int],
        shown_url: str,
        scratch_key: str = "webhook-consumer:limits:probe",
        blocking: Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: RedisHealth | None = None,
    ) -> None:
        self._client = client
        self._health = health or RedisHealth()  # the process's redis_available, if shared
        self._answered = False  # told the health an answer came, since start or recovery
        # Blocking waits hold a connection for up to WAIT_MAX: a pool of their own, whose
        # replies may take that long, so they neither starve nor time out the scripts.
        self._blocking = blocking
        # Waiting for a pooled connection, connecting and the reply are each bounded by the
        # client; this bounds all of them together (a cancelled command drops its connection).
        self._guard = timeout_seconds
        self._replicas = replicas
        self._shown = shown_url
        self._scratch = scratch_key
        self._clock = clock
        self.round_trips: Counter[str] = Counter()  # by script name ("probe", "load" too)
        self._down: Diagnosis | None = None  # why the link is down; None while shared
        self._down_since = 0.0
        self._up = asyncio.Event()
        self._up.set()
        self._recovered_at = -math.inf
        self._flaps = 0  # falls back in a row, each soon after a recovery
        self._said: set[str] = set()  # kinds of misconfiguration already logged loudly
        self._prober: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def shared(self) -> bool:
        return self._down is None

    def replicas(self) -> int:
        return max(1, self._replicas())

    async def until_shared(self) -> None:
        """Return once the link serves the limits (at once while it does)."""
        await self._up.wait()

    def provision(self, channels: int) -> None:
        """Size the pools for this many channels, so a busy process never waits for a
        connection (a wait that would look like a Redis that does not answer)."""
        if self._client.connection_pool.max_connections < (
            wanted := _BASE_CONNECTIONS + _PER_CHANNEL * channels
        ):
            self._client.connection_pool.max_connections = wanted
        if self._blocking is not None:  # at most one blocking waiter per channel
            pool = self._blocking.connection_pool
            pool.max_connections = max(pool.max_connections, channels + 4)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run `script`; raise FleetUnavailable (and fall back) when Redis does not serve it,
        KeyTrouble when only these keys are the problem. The script is loaded once per Redis
        process: only a NOSCRIPT answer sends its text."""
        if not self.shared:
            raise FleetUnavailable("redis is not answering; limits are per replica meanwhile")
        try:
            return await self._script(script, keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc

    async def wait_pop(self, key: str, seconds: float) -> bool:
        """Take one token from the list `key`, waiting up to `seconds` (at most WAIT_MAX) for
        one to be pushed; False when none came. FleetUnavailable as `run`."""
        if self._blocking is None:
            raise RuntimeError("this link has no client for blocking waits")
        if not self.shared:
            raise FleetUnavailable("redis is not answering; limits are per replica meanwhile")
        seconds = min(seconds, WAIT_MAX)
        self.round_trips["wait"] += 1
        try:
            async with asyncio.timeout(seconds + self._guard):
                return await self._blocking.blpop([key], timeout=seconds) is not None
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc

    def _failed(self, error: BaseException) -> FleetUnavailable:
        diagnosis = diagnose(error)
        if diagnosis.trouble is Trouble.KEY:
            return KeyTrouble(diagnosis)  # Redis answered: the channel's view handles it
        self.lost(error, diagnosis)
        return FleetUnavailable(diagnosis.reason)

    async def _script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        evalsha = self._client.evalsha
        try:
            return await self._call(script.name, evalsha, script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._call("load", self._client.script_load, script.source)
            return await self._call(script.name, evalsha, script.sha, len(keys), *keys, *args)

    async def _call(self, name: str, command: Callable[..., Any], *args: Any) -> Any:
        self.round_trips[name] += 1
        async with asyncio.timeout(self._guard):
            answer = await command(*args)
            raise_if_cancelled()  # inside: a cancel by the guard itself becomes its TimeoutError
        if not self._answered and self.shared:  # while down, only the probe's verdict counts
            self._answered = True
            self._health.answered(_USER)
        return answer

    def lost(self, error: BaseException, diagnosis: Diagnosis | None = None) -> None:
        """Fall back now; the first loss of an outage is logged, and starts the probe."""
        if not self.shared or self._closed:
            return
        diagnosis = diagnosis or diagnose(error)
        now = self._clock()
        self._flaps = self._flaps + 1 if now - self._recovered_at < FLAP_WINDOW else 0
        self._down, self._down_since = diagnosis, now
        self._up.clear()
        self._health.failed(diagnosis.reason, _USER)
        self._answered = False
        self._say_fallback(diagnosis)
        self._start_probe()

    def _say_fallback(self, diagnosis: Diagnosis) -> None:
        fields: dict[str, Any] = {
            "redis": self._shown,
            "reason": diagnosis.reason,
            "divisor": self.replicas(),
            "limits": "rate, concurrency and circuit per replica, each at 1/divisor of its limit",
        }
        if diagnosis.trouble is Trouble.MISCONFIGURED:
            if diagnosis.kind not in self._said:
                self._said.add(diagnosis.kind)
                log.error("rate_limiter.fallback", **fields, fix=diagnosis.fix)
                return
            log.info("rate_limiter.fallback", **fields, again=True)
        elif self._flaps:
            log.info("rate_limiter.fallback", **fields, flaps=self._flaps)
        else:
            log.warning("rate_limiter.fallback", **fields)

    def _start_probe(self) -> None:
        self._prober = asyncio.create_task(self._probe(), name="rate_limiter:probe")
        self._prober.add_done_callback(self._probe_ended)

    def _probe_ended(self, task: asyncio.Task[None]) -> None:
        # Supervision: a probe that ended any other way than by recovering or closing would
        # leave the link on the fallback for good.
        if task.cancelled() or self._closed or self.shared:
            return
        log.error("rate_limiter.probe_restarted", error=repr(task.exception())[:300])
        self._start_probe()

    def _delays(self) -> tuple[float, float]:
        """The first and the longest wait between probes, for the current outage."""
        assert self._down is not None
        if self._down.trouble is Trouble.MISCONFIGURED:
            return MISCONFIGURED_FIRST, MISCONFIGURED_MAX
        first = min(PROBE_FIRST * 4**self._flaps, FLAP_MAX)
        return first, max(PROBE_MAX, first)

    async def _probe(self) -> None:
        delay, _ = self._delays()
        while not self._closed:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # replicas do not probe in step
            try:
                # Connections opened before a restart would each fail once more: start afresh.
                # A close that hangs (a black-holed TLS peer) is bounded like any call.
                for client in (self._client, self._blocking):
                    if client is not None:
                        async with asyncio.timeout(self._guard):
                            await client.connection_pool.disconnect()
                await self._script(_PROBE, (self._scratch,), ("1",))
            except Exception as exc:  # whatever happens, the probe goes on
                self._escalate(diagnose(exc))
                first, most = self._delays()
                delay = min(max(delay * 2, first), most)
                continue
            self._recovered()
            return

    def _escalate(self, diagnosis: Diagnosis) -> None:
        """A probe found an operator's problem behind an outage: say it, and wait longer."""
        down = self._down
        if (
            diagnosis.trouble is Trouble.MISCONFIGURED
            and down is not None
            and down.trouble is not Trouble.MISCONFIGURED
        ):
            self._down = diagnosis
            self._say_fallback(diagnosis)

    def _recovered(self) -> None:
        down = self._clock() - self._down_since
        self._down = None
        self._answered = True
        self._health.answered(_USER)
        self._recovered_at = self._clock()
        self._up.set()
        level = log.info if self._flaps else log.warning
        level("rate_limiter.recovered", redis=self._shown, down_seconds=round(down, 3))

    async def close(self) -> None:
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        await self._client.aclose()
        if self._blocking is not None:
            await self._blocking.aclose()
