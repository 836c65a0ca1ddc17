"""Background writes that must become durable before the work they carry counts as done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

log = structlog.get_logger(__name__)

# Errors that no amount of waiting cures: the record itself cannot be written.
UNWRITABLE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


class Handoff:
    """Runs each write in a task, retrying until it succeeds, then calls `on_written`.

    A write that keeps failing (broker away) holds its records' offsets back: it is never
    dropped, so nothing is lost, only delayed.
    """

    def __init__(self, retry_seconds: float = 1.0) -> None:
        self._retry_seconds = retry_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self,
        write: Callable[[], Awaitable[None]],
        on_written: Callable[[], None],
        what: str,
        on_unwritable: Callable[[Exception], None] | None = None,
    ) -> None:
        """`on_unwritable` takes over when the record can never be written (too large); without
        it such a write is retried like any other, holding its offsets back."""
        run = self._run(write, on_written, what, on_unwritable)
        task = asyncio.get_running_loop().create_task(run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        write: Callable[[], Awaitable[None]],
        on_written: Callable[[], None],
        what: str,
        on_unwritable: Callable[[Exception], None] | None,
    ) -> None:
        while True:
            try:
                await write()
            except UNWRITABLE as exc:
                if on_unwritable is None:
                    log.error("handoff.unwritable", what=what, error=repr(exc)[:300])
                    await asyncio.sleep(self._retry_seconds)
                    continue
                log.warning("handoff.unwritable", what=what, error=repr(exc)[:300])
                on_unwritable(exc)
                return
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
