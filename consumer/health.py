"""Liveness: is the event loop still keeping up? A task samples how late its sleeps wake up.

A loop that is blocked answers no probe at all, so the kubelet's timeout already catches it;
what this adds is a loop that still answers but has been far behind for a while (a CPU-starved
or overloaded process), which a restart may cure, and a monitor that stopped sampling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verdict:
    """What /healthz or /readyz answers: 200 when `ok`, else 503 with `reason`."""

    ok: bool
    reason: str


class LoopMonitor:
    """Unhealthy once every sample for `grace` seconds was later than `bound`, or no sample came
    for `grace` seconds. `sample()` and `verdict()` take the time, so tests need no sleeps."""

    def __init__(
        self,
        interval: float = 0.5,
        bound: float = 2.0,
        grace: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._bound = bound
        self._grace = grace
        self._clock = clock
        self._last_sample = clock()
        self._lag = 0.0
        self._behind_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def lag(self) -> float:
        """How late the last sleep woke up, in seconds."""
        return self._lag

    def start(self) -> None:
        self._last_sample = self._clock()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            asked = self._clock()
            await asyncio.sleep(self._interval)
            now = self._clock()
            self.sample(now - asked - self._interval, now)

    def sample(self, lag: float, now: float) -> None:
        self._lag = max(0.0, lag)
        self._last_sample = now
        if self._lag <= self._bound:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = now - self._lag  # behind since the sleep was due to end

    def verdict(self, now: float | None = None) -> Verdict:
        now = self._clock() if now is None else now
        silent = now - self._last_sample
        if silent > self._grace:
            return Verdict(False, f"the event loop monitor has not run for {silent:.0f} s")
        if self._behind_since is not None and now - self._behind_since >= self._grace:
            return Verdict(
                False,
                f"the event loop has been more than {self._bound:g} s behind for "
                f"{now - self._behind_since:.0f} s (last: {self._lag:.1f} s)",
            )
        return Verdict(True, f"event loop lag {self._lag * 1000:.0f} ms")
