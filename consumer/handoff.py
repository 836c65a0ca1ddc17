"""Background writes that must become durable before the work they carry counts as done."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from .observer import NO_OBSERVER, HandoffChanged, Observer

# Errors that no amount of waiting cures: the record itself cannot be written.
UNWRITABLE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
# Errors that waiting can cure: the broker or the network is away for now. Anything else is
# a bug of ours, and retrying a bug forever would only hide it.
TRANSIENT = (KafkaError, OSError, TimeoutError)


class Handoff:
    """Runs each write in a task, retrying with capped exponential backoff until it succeeds,
    then calls `on_written`.

    A write that keeps failing (broker away) holds its records' offsets back: it is never
    dropped, so nothing is lost, only delayed. The observer hears once when writes begin to
    fail and once when they succeed again, with a count, not once per failed try.
    """

    def __init__(
        self,
        what: str,
        observer: Observer = NO_OBSERVER,
        *,
        initial_backoff: float = 0.2,
        max_backoff: float = 30.0,
        on_fatal: Callable[[BaseException], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._what = what
        self._observer = observer
        self._initial = initial_backoff
        self._max = max_backoff
        self._on_fatal = on_fatal
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed_writes = 0  # failed tries since writes began failing; 0: healthy

    def submit(
        self,
        write: Callable[[], Awaitable[None]],
        on_written: Callable[[], None],
        on_unwritable: Callable[[Exception], None] | None = None,
    ) -> None:
        """`on_unwritable` takes over when the record can never be written (too large); without
        it such a write is retried like any other, holding its offsets back."""
        run = self._run(write, on_written, on_unwritable)
        task = asyncio.get_running_loop().create_task(run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        write: Callable[[], Awaitable[None]],
        on_written: Callable[[], None],
        on_unwritable: Callable[[Exception], None] | None,
    ) -> None:
        tries = 0
        while True:
            try:
                await write()
            except UNWRITABLE as exc:
                if on_unwritable is not None:
                    on_unwritable(exc)
                    return
                self._failed(exc)
            except TRANSIENT as exc:
                self._failed(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fatal(exc)
                return
            else:
                self._recovered()
                on_written()
                return
            tries += 1
            ceiling = min(self._max, self._initial * 2 ** (tries - 1))
            await asyncio.sleep(self._rng.uniform(ceiling / 2, ceiling))

    def _failed(self, exc: Exception) -> None:
        self._failed_writes += 1
        if self._failed_writes == 1:
            self._observer.emit(HandoffChanged(self._what, True, 1, repr(exc)[:300]))

    def _recovered(self) -> None:
        if self._failed_writes:
            failed, self._failed_writes = self._failed_writes, 0
            self._observer.emit(HandoffChanged(self._what, False, failed, ""))

    def _fatal(self, exc: Exception) -> None:
        if self._on_fatal is None:
            raise exc
        self._on_fatal(exc)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    @property
    def failing(self) -> bool:
        return self._failed_writes > 0

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
