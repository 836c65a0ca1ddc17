"""Run one consumer process (ours or a peer) over a pre-loaded topic and measure it.

The window runs from the first request the receiver got (the first record consumed, a few
milliseconds later) to the first poll that finds the group's committed offsets at the topic's
end. CPU is the process tree's, from /proc, over that window; start-up is counted apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kafka import admin_client, committed
from .procstat import TreeMeter
from .receiver import GoReceiver, PathStats

POLL_SECONDS = 0.2


@dataclass
class Run:
    """What one consumer process did; times are Unix ns, CPU in seconds."""

    launched_ns: int
    first_ns: int | None = None  # first request on a counted path
    last_ns: int | None = None  # last 2xx request on a counted path
    committed_ns: int | None = None  # the poll that found every offset committed
    cpu_at_first: float = 0.0
    cpu_at_end: float = 0.0
    cpu_total: float = 0.0  # start-up and shutdown included
    peak_rss_mib: float = 0.0
    processes: int = 0
    ok: int = 0  # distinct delivery ids answered 2xx on the counted paths
    answered_ok: int = 0  # 2xx answers, a redelivered id counted each time
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    exit_code: int | None = None
    complete: bool = False

    @property
    def window_seconds(self) -> float:
        if self.first_ns is None or self.committed_ns is None:
            return float("nan")
        return (self.committed_ns - self.first_ns) / 1e9

    @property
    def receipt_seconds(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return float("nan")
        return (self.last_ns - self.first_ns) / 1e9

    def figures(self) -> dict[str, Any]:
        window_cpu = self.cpu_at_end - self.cpu_at_first
        return {
            "complete": self.complete,
            "deliveries": self.ok,
            "duplicates": self.answered_ok - self.ok,
            "startup_seconds": _round((self.first_ns or 0) - self.launched_ns, 1e9, 2),
            "window_seconds": round(self.window_seconds, 2),
            "deliveries_per_second": _rate(self.ok, self.window_seconds),
            "deliveries_per_second_to_last_receipt": _rate(self.ok, self.receipt_seconds),
            "cpu_seconds_window": round(window_cpu, 2),
            "cpu_seconds_per_1000": round(1000 * window_cpu / self.ok, 3) if self.ok else None,
            "deliveries_per_cpu_second": _rate(self.ok, window_cpu),
            "cpu_seconds_total": round(self.cpu_total, 2),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "processes": self.processes,
            "statuses": self.statuses,
            "exit_code": self.exit_code,
        }


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds and seconds == seconds and seconds > 0 else None


def _round(ns: int, unit: float, digits: int) -> float:
    return round(ns / unit, digits)


Hook = Callable[[int], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def nothing(_pid: int) -> AsyncIterator[None]:
    """The hook that does nothing."""
    yield


async def run_consumer(
    argv: Sequence[str],
    *,
    receiver: GoReceiver,
    bootstrap: str,
    group: str | None,
    topic: str,
    records: int,
    paths: Collection[str],
    expected_ok: int,
    within: float,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    during: Hook = nothing,
) -> Run:
    """Start `argv`, wait until `expected_ok` distinct delivery ids were answered 2xx on `paths`
    (a redelivery does not count twice) and `group` has
    committed all `records` of `topic` (or `within` seconds passed), then SIGTERM it and wait
    for its exit.
    Without a group (no Kafka: the fire-hose) the window ends at the last 2xx answer.
    `during(pid)` is entered at the first request and left at the end of the window (the
    profiler uses it)."""
    await receiver.reset()
    stderr = log.open("ab") if log is not None else asyncio.subprocess.DEVNULL
    run = Run(launched_ns=time.time_ns())
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )
    meter = TreeMeter(process.pid)
    deadline = time.monotonic() + within
    stats: dict[str, PathStats] = {}
    try:
        async with contextlib.AsyncExitStack() as profile:
            # Only a consumer group needs the broker; the fire-hose runs without one.
            admin = await profile.enter_async_context(admin_client(bootstrap)) if group else None
            while time.monotonic() < deadline:
                exited = process.returncode is not None  # then this is the last look
                meter.sample()
                stats = {p: s for p, s in (await receiver.stats()).items() if p in paths}
                run.ok = sum(s.unique_ok for s in stats.values())
                run.answered_ok = sum(s.count(200) for s in stats.values())
                if run.first_ns is None and stats:
                    run.first_ns = min(s.first_ns for s in stats.values())
                    await profile.enter_async_context(during(process.pid))
                if run.ok >= expected_ok and (
                    admin is None or await committed(admin, group or "", topic) >= records
                ):
                    run.committed_ns = time.time_ns() if group else _last_ok(stats)
                    meter.sample()
                    run.cpu_at_end = meter.cpu_at(run.committed_ns or 0)
                    run.complete = True
                    break
                if exited:
                    break
                await asyncio.sleep(POLL_SECONDS)
        run.last_ns = _last_ok(stats)
        run.statuses = {p: dict(s.statuses) for p, s in stats.items()}
    finally:
        run.exit_code = await _stop(process, meter)
        if log is not None and not isinstance(stderr, int):
            stderr.close()
    run.cpu_total = meter.cpu_seconds
    if run.first_ns is not None:
        run.cpu_at_first = meter.cpu_at(run.first_ns)
    run.peak_rss_mib = meter.peak_rss_mib
    run.processes = meter.processes
    if not run.complete:
        run.cpu_at_end = run.cpu_total
    return run


def _last_ok(stats: Mapping[str, PathStats]) -> int | None:
    return max((s.last_ns for s in stats.values() if s.count(200)), default=None)


async def _stop(process: asyncio.subprocess.Process, meter: TreeMeter, grace: float = 60) -> int:
    """SIGTERM, keep sampling while it drains, SIGKILL after `grace`; the exit code."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while process.returncode is None and time.monotonic() < deadline:
        meter.sample()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), POLL_SECONDS)
    if process.returncode is None:
        process.kill()
    return await process.wait()
