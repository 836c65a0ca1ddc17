"""One channel's view of the link: shared while the link is and this channel's keys work.

A key that holds something the scripts cannot use (another program's value of another type
under our prefix) breaks only its channel: that channel takes its per-replica share, said
once with the fix, and its keys are tried again after a backoff, while every other channel
stays fleet-wide.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog

from .link import RedisLink, Script
from .shared import FleetUnavailable
from .trouble import Diagnosis, KeyTrouble

log = structlog.get_logger(__name__)

KEY_RETRY_FIRST: Final = 30.0  # seconds before a channel's broken keys are tried again
KEY_RETRY_MAX: Final = 600.0


class ChannelLink:
    def __init__(
        self,
        link: RedisLink,
        channel: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._link = link
        self._channel = channel
        self._clock = clock
        self._broken_until = -math.inf
        self._backoff = 0.0  # 0 while the keys work

    @property
    def shared(self) -> bool:
        return self._link.shared and self._clock() >= self._broken_until

    def replicas(self) -> int:
        return self._link.replicas()

    async def until_shared(self) -> None:
        while True:
            await self._link.until_shared()
            left = self._broken_until - self._clock()
            if left <= 0:
                return
            await asyncio.sleep(left)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        self._refuse_while_broken()
        try:
            answer = await self._link.run(script, keys, args)
        except KeyTrouble as trouble:
            self._broke(trouble.diagnosis)
            raise
        self._works()
        return answer

    async def wait_pop(self, key: str, seconds: float) -> bool:
        self._refuse_while_broken()
        try:
            return await self._link.wait_pop(key, seconds)
        except KeyTrouble as trouble:
            self._broke(trouble.diagnosis)
            raise

    def _refuse_while_broken(self) -> None:
        if self._clock() < self._broken_until:
            raise FleetUnavailable(f"channel {self._channel}: its keys are unusable meanwhile")

    def _broke(self, diagnosis: Diagnosis) -> None:
        first = not self._backoff
        self._backoff = min(self._backoff * 2, KEY_RETRY_MAX) if self._backoff else KEY_RETRY_FIRST
        self._broken_until = self._clock() + self._backoff
        fields = {"channel": self._channel, "reason": diagnosis.reason}
        if first:
            log.error(
                "rate_limiter.channel_fallback",
                **fields,
                retry_seconds=self._backoff,
                fix=diagnosis.fix,
                limits="this channel's rate, concurrency and circuit per replica meanwhile",
            )
        else:
            log.info("rate_limiter.channel_fallback", **fields, retry_seconds=self._backoff)

    def _works(self) -> None:
        if self._backoff:
            self._backoff = 0.0
            log.warning("rate_limiter.channel_recovered", channel=self._channel)
