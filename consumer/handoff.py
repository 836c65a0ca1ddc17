"""Background writes that must become durable before the work they carry counts as done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


class Handoff:
    """Runs each write in a task, retrying until it succeeds, then calls `on_written`.

    A write that keeps failing (broker away) holds its records' offsets back: it is never
    dropped, so nothing is lost, only delayed.
    """

    def __init__(self, retry_seconds: float = 1.0) -> None:
        self._retry_seconds = retry_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self, write: Callable[[], Awaitable[None]], on_written: Callable[[], None], what: str
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._run(write, on_written, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, write: Callable[[], Awaitable[None]], on_written: Callable[[], None], what: str
    ) -> None:
        while True:
            try:
                await write()
            except Exception as exc:
                log.warning("handoff.write_failed", what=what, error=repr(exc)[:300])
                await asyncio.sleep(self._retry_seconds)
                continue
            on_written()
            return

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
