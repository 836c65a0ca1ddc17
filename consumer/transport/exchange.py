"""One keep-alive HTTP/1.1 connection of the lean transport: a request out, its answer in.

An `asyncio.Protocol` shaped like uvicorn's httptools_impl: llhttp (through httptools) parses the
response and its callbacks fill this connection's per-message fields; the deadline is one loop
timer, not a task. It knows nothing of pools, addresses or retries (`lean.py` does).

The answer is taken as soon as its status and headers are in and either the message is
complete or its first body bytes arrived (what aiohttp's `read(EXCERPT_BYTES)` returns); a
connection whose answer was not read to its end is closed, never reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, cast

import httptools

from . import EXCERPT_BYTES, MAX_HEADER_BYTES, MAX_HEADERS, Answer, TransportError

MAX_HEAD_BYTES: Final = 64 * 1024  # a whole response head (status line and headers)


class ClosedBeforeAnswer(TransportError):
    """The connection closed before one byte of an answer. On a reused connection this is most
    likely the receiver's keep-alive timeout racing our request."""


class _Refused(Exception):
    """Raised inside a parser callback; the reason is kept on the connection."""


class Connection(asyncio.Protocol):
    """One request at a time: `send` writes it and returns the future of its answer."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[Connection], None]
    ) -> None:
        self._loop = loop
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.answers = 0  # final answers read whole: above 0, the connection is a reused one
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refusal = ""  # why a parser callback refused the response
        # Per request:
        self._heard = False  # any byte of an answer arrived
        self._final = False  # the final (not 1xx) answer is complete
        self._keep_alive = False
        self._broken = False  # something happened that a next request must not inherit
        # Per message (a 1xx answer is followed by another message):
        self._status = 0
        self._reason_bytes = 0
        self._retry_after: str | None = None
        self._excerpt = b""
        self._headers = 0
        self._head_bytes = 0
        self._headers_done = False

    @property
    def reusable(self) -> bool:
        return self._final and self._keep_alive and not self._broken and not self.closed

    def send(self, data: bytes, deadline: float) -> asyncio.Future[Answer]:
        """Write one whole request; the future holds its answer, or fails at `deadline`."""
        waiter = self._loop.create_future()
        if self.closed or self._transport is None:
            waiter.set_exception(ClosedBeforeAnswer("connection closed before any answer"))
            return waiter
        self._heard = self._final = self._broken = False
        self._begin_message()
        self._waiter = waiter
        self._timer = self._loop.call_at(deadline, self._expire)
        self._transport.write(data)
        return waiter

    def close(self) -> None:
        """Close now; an answer still awaited (its caller was cancelled) is dropped."""
        self.closed = True
        self._waiter = None
        self._stop_timer()
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Nothing asked: bytes on an idle connection (or after its answer was taken) leave
            # it in a state no next request can trust.
            self._broken = True
            self.close()
            return
        self._heard = True
        if not self._headers_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not (self._final or (self._headers_done and self._status == 101)):
                self._fail(TransportError(self._refusal or f"invalid HTTP response: {exc}"))
                return
            # Bytes after the answer (a second one, or another protocol after a 101) stop
            # the parser; the answer stands, the connection is not used again.
            self._broken = True
        if not self._headers_done:
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(TransportError(f"response head too long: over {MAX_HEAD_BYTES} bytes"))
        elif self._final or self._excerpt or self._broken:
            self._answer()

    def eof_received(self) -> bool:
        self.closed = True
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)
        if self._waiter is None:
            return
        if self._headers_done:
            self._broken = True
            self._answer()  # a body that ends at the close (or was cut): the status stands
        elif not self._heard:
            why = "connection closed before any answer" + (f" ({exc})" if exc else "")
            self._fail(ClosedBeforeAnswer(why))
        else:
            self._fail(TransportError("connection closed in the middle of the response head"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._final:
            self._refuse("a second answer to one request")

    def on_status(self, reason: bytes) -> None:
        self._reason_bytes += len(reason)
        if self._reason_bytes > MAX_HEADER_BYTES:
            self._refuse(f"status line too long: over {MAX_HEADER_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS:
            self._refuse(f"too many response headers: over {MAX_HEADERS}")
        if len(name) > MAX_HEADER_BYTES or len(value) > MAX_HEADER_BYTES:
            self._refuse(f"response header too long: over {MAX_HEADER_BYTES} bytes")
        if len(name) == 11 and not self._headers_done and name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        room = EXCERPT_BYTES - len(self._excerpt)
        if room > 0:
            self._excerpt += body[:room]

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200 and self._status != 101:
            self._begin_message()  # informational: the real answer follows
            return
        self._final = True
        self._keep_alive = self._parser.should_keep_alive()

    # internals

    def _begin_message(self) -> None:
        self._status = self._reason_bytes = self._headers = self._head_bytes = 0
        self._retry_after = None
        self._excerpt = b""
        self._headers_done = False

    def _refuse(self, why: str) -> None:
        self._refusal = why
        raise _Refused(why)

    def _answer(self) -> None:
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        if self._final:
            self.answers += 1
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(self._status, self._retry_after, self._excerpt))

    def _expire(self) -> None:
        self._timer = None
        self._fail(TimeoutError())

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        self._broken = self.closed = True
        if self._transport is not None:
            self._transport.abort()  # a receiver that stopped reading must not hold our write
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
