"""Hostile receivers on raw loopback sockets: slow drips, huge headers, endless bodies.

Each server speaks just enough HTTP to be believed; the Sender must bound time and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from consumer.outcome import Kind, Outcome
from consumer.sender import Sender
from consumer.transport import EXCERPT_BYTES
from tests.transports import open_client

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, DeliveryFactory

Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]
FIFTY_MB = 50 * 1024 * 1024


@dataclass
class RawServer:
    port: int = 0
    handler: Handler | None = None
    written: int = 0  # body bytes the server managed to hand to its socket
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    error: str = ""  # how the server's writing ended, if it did not finish


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    state = RawServer()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        assert state.handler is not None
        try:
            await state.handler(writer)
        except (ConnectionError, OSError) as exc:
            state.error = type(exc).__name__
        finally:
            state.finished.set()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    yield state
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)


@pytest.fixture
def send(
    channel_cfg: ChannelFactory,
    build_catalog: CatalogFactory,
    bare_delivery: DeliveryFactory,
    raw: RawServer,
    client: str,
) -> Any:
    async def run(timeout_seconds: float) -> tuple[Outcome, float]:
        _, catalog = build_catalog(
            [
                channel_cfg(
                    "edge", url=f"http://127.0.0.1:{raw.port}/h", timeout_seconds=timeout_seconds
                )
            ]
        )
        delivery = bare_delivery(catalog.channels["edge"])
        transport = open_client(client)
        try:
            started = time.monotonic()
            outcome = await Sender(transport).send(delivery)
            return outcome, time.monotonic() - started
        finally:
            await transport.close()

    return run


async def _drip(writer: asyncio.StreamWriter, data: bytes, sent: RawServer | None = None) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        if sent is not None:
            sent.written += 1
        await asyncio.sleep(0.1)  # the hostile receiver's pace, not a wait for a condition


async def test_a_receiver_dripping_its_answer_is_cut_off_at_the_total_timeout(
    raw: RawServer, send: Any
) -> None:
    # Each byte arrives well within any per-read timeout; only a total bound stops this.
    raw.handler = lambda w: _drip(w, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 1000)
    outcome, elapsed = await send(timeout_seconds=0.5)
    assert (outcome.kind, outcome.retryable) == (Kind.TIMEOUT, True)
    # The headers take 100 s to drip; cut at the timeout, give or take a loaded loop's delay.
    assert 0.45 <= elapsed < 10, f"{elapsed:.2f}s"
    print(f"\ndrip at 10 B/s, timeout_seconds=0.5: timeout outcome after {elapsed:.3f}s")


async def test_a_body_dripping_after_the_status_is_not_waited_for(
    raw: RawServer, send: Any, wait_until: Any
) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        await _drip(writer, b"a" * 100_000, raw)

    raw.handler = answer
    outcome, _ = await send(timeout_seconds=20)
    # Delivered: waiting for the body (10,000 s at 10 B/s) would have met the total timeout
    # and been a TIMEOUT outcome. And the sender hung up on the rest of it.
    assert outcome.kind is Kind.DELIVERED
    await wait_until(raw.finished.is_set, within=10, what="the server noticed the close")
    assert raw.written < 100_000, "the body was read to its end"


async def test_an_enormous_body_is_read_only_up_to_the_excerpt(
    raw: RawServer, send: Any, wait_until: Any
) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % FIFTY_MB)
        chunk = b"x" * 65536
        while raw.written < FIFTY_MB:
            writer.write(chunk)
            await writer.drain()
            raw.written += len(chunk)

    raw.handler = answer
    outcome, elapsed = await send(timeout_seconds=30)
    assert outcome.kind is Kind.DELIVERED
    assert len(outcome.message) == EXCERPT_BYTES
    await wait_until(raw.finished.is_set, within=10, what="the server noticed the close")
    # The sender hung up: the server could not write the rest (socket buffers hold a few MB).
    assert raw.error in ("ConnectionResetError", "BrokenPipeError"), raw.error
    assert raw.written < FIFTY_MB / 2, raw.written
    print(f"\n50 MB answer: outcome after {elapsed:.3f}s, server wrote {raw.written >> 20} MB")


async def test_a_huge_header_is_refused_not_buffered(raw: RawServer, send: Any) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 10_000_000 + b"\r\n\r\n")
        await writer.drain()

    raw.handler = answer
    outcome, elapsed = await send(timeout_seconds=10)
    assert (outcome.kind, outcome.retryable) == (Kind.CONNECTION, True)
    assert "too long" in outcome.message.lower() or "8190" in outcome.message, outcome.message
    assert elapsed < 2.0, f"{elapsed:.2f}s"


async def test_too_many_headers_are_refused(raw: RawServer, send: Any) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
        writer.write(b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 0\r\n\r\n")
        await writer.drain()

    raw.handler = answer
    outcome, _ = await send(timeout_seconds=10)
    assert (outcome.kind, outcome.retryable) == (Kind.CONNECTION, True)
