"""The fleet-wide limits' one Redis client: scripts by EVALSHA, every call bounded and
counted, and the switch to the per-replica fallback when Redis stops answering.

A failed call marks the link down at once (logged once, `rate_limiter.fallback`) and every
limit of the process falls back to its share; a background probe with backoff, not the hot
path, finds out when Redis answers again (`rate_limiter.recovered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from consumer.redis_health import RedisHealth
from consumer.secrets import redact

from .shared import FleetUnavailable

log = structlog.get_logger(__name__)
_USER: Final = "rate_limiter"  # how this link reports to the process's RedisHealth

WAIT_MAX: Final = 1.0  # seconds a blocking wait lasts at most (the blocking client allows it)
_PROBE_FIRST: Final = 0.25  # seconds before the first probe of a Redis that stopped answering
_PROBE_MAX: Final = 2.0  # the probe backs off to this: a PING every 2 s costs nothing


@dataclass(frozen=True, slots=True)
class Script:
    name: str  # for the round-trip counts
    source: str
    sha: str

    @classmethod
    def of(cls, name: str, source: str) -> Script:
        # SHA-1 is how Redis names a script, not a security measure.
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


class RedisLink:
    def __init__(
        self,
        client: Redis,
        *,
        timeout_seconds: float,
        replicas: Callable[[], int],
        shown_url: str,
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
        self._clock = clock
        self.round_trips: Counter[str] = Counter()  # by script name ("ping", "load" too)
        self._down_since: float | None = None
        self._prober: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def shared(self) -> bool:
        return self._down_since is None

    def replicas(self) -> int:
        return max(1, self._replicas())

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run `script`; raise FleetUnavailable (and fall back) when Redis does not answer.
        The script is loaded once per Redis process: only a NOSCRIPT answer sends its text."""
        if not self.shared:
            raise FleetUnavailable("redis is not answering; limits are per replica meanwhile")
        try:
            try:
                return await self._call(
                    script.name, self._client.evalsha, script.sha, len(keys), *keys, *args
                )
            except NoScriptError:
                await self._call("load", self._client.script_load, script.source)
                return await self._call(
                    script.name, self._client.evalsha, script.sha, len(keys), *keys, *args
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.lost(exc)
            raise FleetUnavailable(str(exc)) from exc

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
            self.lost(exc)
            raise FleetUnavailable(str(exc)) from exc

    async def _call(self, name: str, command: Callable[..., Any], *args: Any) -> Any:
        self.round_trips[name] += 1
        async with asyncio.timeout(self._guard):
            answer = await command(*args)
        if not self._answered:
            self._answered = True
            self._health.answered(_USER)
        return answer

    def lost(self, error: BaseException) -> None:
        """Fall back now; the first loss of an outage is logged, and starts the probe."""
        if not self.shared or self._closed:
            return
        self._down_since = self._clock()
        reason = redact(str(error)) or type(error).__name__
        self._health.failed(f"{type(error).__name__}: {reason}", _USER)
        self._answered = False
        log.warning(
            "rate_limiter.fallback",
            redis=self._shown,
            reason=f"{type(error).__name__}: {reason}"[:300],
            divisor=self.replicas(),
            limits="rate, concurrency and circuit per replica, each at 1/divisor of its limit",
        )
        self._prober = asyncio.create_task(self._probe(), name="rate_limiter:probe")

    async def _probe(self) -> None:
        delay = _PROBE_FIRST
        while True:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # replicas do not probe in step
            try:
                await self._call("ping", self._client.ping)
            except (RedisError, OSError, TimeoutError):
                delay = min(delay * 2, _PROBE_MAX)
                continue
            # Connections opened before a restart would each fail once more: start afresh.
            for client in (self._client, self._blocking):
                if client is not None:
                    await client.connection_pool.disconnect()
            down = self._clock() - (self._down_since or self._clock())
            self._down_since = None
            log.warning("rate_limiter.recovered", redis=self._shown, down_seconds=round(down, 3))
            return

    async def close(self) -> None:
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        await self._client.aclose()
        if self._blocking is not None:
            await self._blocking.aclose()
