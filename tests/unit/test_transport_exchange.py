"""The lean transport's connection as a state machine, fed byte strings (h11's way of testing):
no socket, a fake transport, every split of a response into the reads a socket could make."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from consumer.transport import EXCERPT_BYTES, Answer, TransportError
from consumer.transport.exchange import MAX_HEAD_BYTES, ClosedBeforeAnswer, Connection


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted


def connection() -> tuple[Connection, FakeTransport, list[Connection]]:
    lost: list[Connection] = []
    conn = Connection(asyncio.get_running_loop(), lost.append)
    transport = FakeTransport()
    conn.connection_made(transport)
    return conn, transport, lost


def far() -> float:
    return asyncio.get_running_loop().time() + 60


def feed(conn: Connection, pieces: Sequence[bytes]) -> asyncio.Future[Answer]:
    waiter = conn.send(b"POST / HTTP/1.1\r\n\r\n", far())
    for piece in pieces:
        if waiter.done():
            break
        conn.data_received(piece)
    return waiter


def splits(data: bytes) -> list[list[bytes]]:
    """Every way to cut `data` into two reads, and one byte per read."""
    return [[data[:i], data[i:]] for i in range(1, len(data))] + [[bytes([b]) for b in data]]


RESPONSES = {
    "content-length": (
        b"HTTP/1.1 503 Busy\r\nRetry-After: 120\r\nContent-Length: 5\r\n\r\nlater",
        Answer(503, "120", b"later"),
    ),
    "chunked-with-trailer": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
        Answer(200, None, b"abcde"),
    ),
    "continue-then-final": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nRetry-After: 1\r\n\r\n",
        Answer(204, "1", b""),
    ),
}


@pytest.mark.parametrize("name", RESPONSES)
async def test_a_response_read_whole_is_the_same_answer_however_it_is_cut(name: str) -> None:
    data, expected = RESPONSES[name]
    for pieces in [[data], *splits(data)]:
        conn, transport, _ = connection()
        waiter = feed(conn, pieces)
        assert waiter.done(), pieces
        answer = waiter.result()
        assert (answer.status, answer.retry_after) == (expected.status, expected.retry_after)
        # Taken at its first body bytes, or whole: never anything but a start of the body.
        assert expected.excerpt.startswith(answer.excerpt), pieces
        assert answer.excerpt or not expected.excerpt, pieces
        assert conn.reusable == (answer.excerpt == expected.excerpt and conn.answers == 1)
        assert not transport.aborted


async def test_a_complete_answer_leaves_the_connection_for_the_next_request() -> None:
    conn, transport, _ = connection()
    first = feed(conn, [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    assert first.result() == Answer(200, None, b"ok")
    assert conn.reusable
    second = feed(conn, [b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    assert second.result() == Answer(201, None, b"")
    assert (conn.reusable, conn.answers, len(transport.written)) == (True, 2, 2)


async def test_the_excerpt_is_capped() -> None:
    conn, _, _ = connection()
    body = b"x" * (EXCERPT_BYTES * 3)
    waiter = feed(conn, [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body])
    assert waiter.result().excerpt == body[:EXCERPT_BYTES]
    assert conn.reusable  # read whole in that one read


async def test_bytes_on_an_idle_connection_close_it() -> None:
    conn, transport, _ = connection()
    conn.data_received(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert transport.closed
    assert not conn.reusable


async def test_a_second_answer_to_one_request_spoils_the_connection() -> None:
    conn, _, _ = connection()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    waiter = feed(conn, [ok + ok])
    assert waiter.result() == Answer(200, None, b"ok")
    assert not conn.reusable


async def test_connection_close_and_http10_are_not_kept() -> None:
    for head in (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", b"HTTP/1.0 200 OK\r\n"):
        conn, _, _ = connection()
        waiter = feed(conn, [head + b"Content-Length: 0\r\n\r\n"])
        assert waiter.result().status == 200
        assert not conn.reusable


async def test_a_close_before_any_byte_is_the_retryable_kind() -> None:
    conn, _, lost = connection()
    waiter = conn.send(b"request", far())
    conn.connection_lost(ConnectionResetError(104, "reset"))
    with pytest.raises(ClosedBeforeAnswer):
        waiter.result()
    assert lost == [conn]


async def test_a_close_inside_the_head_is_not() -> None:
    conn, _, _ = connection()
    waiter = feed(conn, [b"HTTP/1.1 200 OK\r\nContent-"])
    conn.connection_lost(None)
    with pytest.raises(TransportError) as caught:
        waiter.result()
    assert not isinstance(caught.value, ClosedBeforeAnswer)


async def test_a_body_cut_by_the_close_keeps_its_status() -> None:
    conn, _, _ = connection()
    waiter = feed(conn, [b"HTTP/1.1 200 OK\r\n\r\n"])  # no length: the body ends at the close
    assert not waiter.done()
    conn.eof_received()
    conn.connection_lost(None)
    assert waiter.result() == Answer(200, None, b"")
    assert not conn.reusable


async def test_sending_on_a_closed_connection_fails_at_once_as_retryable() -> None:
    conn, transport, _ = connection()
    conn.eof_received()
    with pytest.raises(ClosedBeforeAnswer):
        conn.send(b"request", far()).result()
    assert transport.written == []


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"HTTP/1.1 200 " + b"K" * 9000 + b"\r\n\r\n", "status line too long"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"v" * 9000 + b"\r\n\r\n", "header too long"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: v\r\n" * 129 + b"\r\n", "too many response headers"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: v\r\n" * 5 + b"Y: " + b"v" * 8000, None),
        (b"HTTP/1.1 200 OK\r\n" + (b"X: " + b"v" * 8000 + b"\r\n") * 9, "head too long"),
        (b"SMTP ready\r\n", "invalid HTTP response"),
    ],
)
async def test_limits_and_garbage(data: bytes, why: str | None) -> None:
    conn, transport, _ = connection()
    waiter = feed(conn, [data])
    if why is None:  # within every limit, only incomplete: still waiting
        assert not waiter.done()
        return
    with pytest.raises(TransportError, match=why):
        waiter.result()
    assert transport.aborted
    assert not conn.reusable


async def test_a_head_over_the_limit_is_refused_even_in_small_reads() -> None:
    conn, _, _ = connection()
    waiter = conn.send(b"request", far())
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    line = b"X: " + b"v" * 1000 + b"\r\n"
    for _ in range(MAX_HEAD_BYTES // len(line) + 1):
        conn.data_received(line)
    with pytest.raises(TransportError, match="head too long"):
        waiter.result()


async def test_the_deadline_fails_the_answer_and_aborts_the_connection() -> None:
    conn, transport, _ = connection()
    loop = asyncio.get_running_loop()
    waiter = conn.send(b"request", loop.time() + 0.01)
    conn.data_received(b"HTTP/1.1 200 OK\r\n")  # a start, and then nothing
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiter, 2)
    assert transport.aborted
    assert not conn.reusable
