"""Background writes that must become durable before the work they carry counts as done."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from .observer import NO_OBSERVER, HandedOff, HandoffChanged, Observer

# Errors that no amount of waiting cures: the record itself cannot be written.
UNWRITABLE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)
# Errors that waiting can cure: the broker or the network is away for now. Anything else is
# a bug of ours, and retrying a bug forever would only hide it.
TRANSIENT = (KafkaError, OSError, TimeoutError)

# Hands a record to the producer and returns its acknowledgement, to be awaited.
Send = Callable[[], Awaitable[Awaitable[Any]]]
_BATCH = 1000  # records handed to the producer before their acknowledgements are awaited


class Acknowledged:
    """An acknowledgement that is already in: what in-memory sinks return."""

    def __await__(self) -> Any:
        return iter(())


ACKNOWLEDGED = Acknowledged()


@dataclass(slots=True)
class _Write:
    send: Send
    on_written: Callable[[], None]
    on_unwritable: Callable[[Exception], None] | None
    tries: int = 0


class Handoff:
    """Writes records until each is durable, then calls its `on_written`.

    One writer task hands every pending record to the producer, then awaits their
    acknowledgements together: a burst of thousands (a receiver failing, a circuit opening)
    costs one task and the producer's own batching, not a task and a round trip each. A record
    that fails waits (capped exponential backoff, jittered) and is tried again: it is never
    dropped, so nothing is lost, only delayed, and its offsets are held back meanwhile. The
    observer hears once when writes begin to fail and once when they succeed again.
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
        self._queue: deque[_Write] = deque()
        self._waiting: dict[int, tuple[asyncio.TimerHandle, _Write]] = {}  # backing off
        self._in_flight = 0
        self._work = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failed_writes = 0  # failed tries since writes began failing; 0: healthy

    def submit(
        self,
        send: Send,
        on_written: Callable[[], None],
        on_unwritable: Callable[[Exception], None] | None = None,
    ) -> None:
        """`on_unwritable` takes over when the record can never be written (too large); without
        it such a write is retried like any other, holding its offsets back."""
        self._queue.append(_Write(send, on_written, on_unwritable))
        self._work.set()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_all())

    def traced(
        self,
        on_written: Callable[[], None],
        traceparent: str | None,
        tracestate: str | None,
        delivery_id: str | None,
        channel: str | None,
    ) -> Callable[[], None]:
        """`on_written`, telling the observer how long the write took when the work is traced
        and a hook records spans; else `on_written` itself, at no cost."""
        if traceparent is None or not self._observer.spans:
            return on_written
        started = time.time_ns()
        observer, what = self._observer, self._what

        def written() -> None:
            observer.emit(
                HandedOff(
                    what, traceparent, tracestate, delivery_id, channel, started, time.time_ns()
                )
            )
            on_written()

        return written

    async def _write_all(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                self._in_flight = len(batch)
                acks: list[Awaitable[Any] | BaseException] = []
                for write in batch:
                    try:
                        acks.append(await write.send())
                    except Exception as exc:  # refused before it was even queued
                        acks.append(exc)
                results = await asyncio.gather(
                    *(_settled(ack) for ack in acks), return_exceptions=True
                )
                self._in_flight = 0
                for write, result in zip(batch, results, strict=True):
                    self._settle(write, result)

    def _settle(self, write: _Write, result: BaseException | None) -> None:
        try:
            if result is None:
                self._recovered()
                write.on_written()
            elif isinstance(result, UNWRITABLE) and write.on_unwritable is not None:
                write.on_unwritable(result)
            elif isinstance(result, TRANSIENT):
                self._failed(result)
                self._retry_later(write)
            elif isinstance(result, Exception):
                raise result
            # Anything else (CancelledError): the service is stopping.
        except Exception as exc:  # a bug, in the write or in what follows it
            self._fatal(exc)

    def _retry_later(self, write: _Write) -> None:
        write.tries += 1
        ceiling = min(self._max, self._initial * 2 ** (write.tries - 1))
        delay = self._rng.uniform(ceiling / 2, ceiling)
        handle = asyncio.get_running_loop().call_later(delay, self._again, write)
        self._waiting[id(write)] = (handle, write)

    def _again(self, write: _Write) -> None:
        del self._waiting[id(write)]
        self._queue.append(write)
        self._work.set()

    def _failed(self, exc: BaseException) -> None:
        self._failed_writes += 1
        if self._failed_writes == 1:
            self._observer.emit(HandoffChanged(self._what, True, 1, repr(exc)[:300]))

    def _recovered(self) -> None:
        if self._failed_writes:
            failed, self._failed_writes = self._failed_writes, 0
            self._observer.emit(HandoffChanged(self._what, False, failed, ""))

    def _fatal(self, exc: Exception) -> None:
        if self._on_fatal is None:
            raise exc  # unwired (unit tests): fail loudly where it happened
        self._on_fatal(exc)

    @property
    def pending(self) -> int:
        """Records not durable yet: queued, being written, or waiting to be tried again."""
        return len(self._queue) + self._in_flight + len(self._waiting)

    @property
    def failing(self) -> bool:
        return self._failed_writes > 0

    async def close(self) -> None:
        for handle, _ in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)


async def _settled(ack: Awaitable[Any] | BaseException) -> None:
    if isinstance(ack, BaseException):
        raise ack
    await ack
