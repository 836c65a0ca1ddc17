"""Both transports against a raw-socket server that scripts what real receivers get wrong.

Where the transports differ on purpose, the test says which does what and why: aiohttp never
retries a POST; the lean transport retries once when a reused connection closes before any
byte of an answer (docs/delivery.md)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from yarl import URL

from consumer.transport import TransportError
from tests.support.resolver import StubResolver
from tests.transports import open_client

from .conftest import Post
from .servers import Peer, RawServer

if TYPE_CHECKING:
    from tests.unit.conftest import WaitUntil

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def answer_every_request(peer: Peer, _: int) -> None:
    while await peer.request() is not None:
        await peer.send(OK)


async def _drip(peer: Peer, data: bytes, every: float) -> None:
    for byte in data:
        await peer.send(bytes([byte]))
        await asyncio.sleep(every)  # the hostile receiver's pace, not a wait for a condition


async def test_a_head_dripping_one_byte_a_second_hits_the_deadline(
    raw: RawServer, post: Post
) -> None:
    async def script(peer: Peer, _: int) -> None:
        await peer.request()
        await _drip(peer, OK, every=1.0)

    raw.script = script
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await post(raw.base, timeout=1.5)
    elapsed = time.monotonic() - started
    assert 1.45 <= elapsed < 3.0, f"{elapsed:.2f}s"


async def test_a_dripping_body_is_answered_at_its_first_byte(raw: RawServer, post: Post) -> None:
    async def script(peer: Peer, _: int) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        await _drip(peer, b"a" * 100, every=1.0)

    raw.script = script
    started = time.monotonic()
    answer = await post(raw.base, timeout=10)
    assert (answer.status, answer.excerpt) == (200, b"a")
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"garbage\r\n\r\n", id="no-status-line"),
        pytest.param(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", id="letters-in-status"),
        pytest.param(b"HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n", id="unknown-version"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", id="header-without-colon"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk-size"
        ),
    ],
)
async def test_a_malformed_answer_is_a_transport_error(
    raw: RawServer, post: Post, garbage: bytes
) -> None:
    async def script(peer: Peer, _: int) -> None:
        await peer.request()
        await peer.send(garbage)
        await peer.closed_by_client()

    raw.script = script
    with pytest.raises(TransportError):
        await post(raw.base)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"HTTP/1.1 200 " + b"K" * 9000, id="long-status-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * 9000, id="long-header-value"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-" + b"n" * 9000 + b": v", id="long-header-name"),
        pytest.param(
            b"HTTP/1.1 200 OK" + b"".join(b"\r\nX-%d: v" % i for i in range(200)),
            id="200-headers",
        ),
    ],
)
async def test_an_oversize_head_is_refused(raw: RawServer, post: Post, head: bytes) -> None:
    async def script(peer: Peer, _: int) -> None:
        await peer.request()
        await peer.send(head + b"\r\nContent-Length: 0\r\n\r\n")
        await peer.closed_by_client()

    raw.script = script
    with pytest.raises(TransportError):
        await post(raw.base)


async def test_a_fresh_connection_closed_before_an_answer_is_not_retried(
    raw: RawServer, post: Post
) -> None:
    async def script(peer: Peer, _: int) -> None:
        await peer.request()  # and hang up without a word

    raw.script = script
    with pytest.raises(TransportError):
        await post(raw.base)
    assert len(raw.requests) == 1  # a fresh connection is never retried, by either transport


async def test_a_close_in_the_middle_of_the_head_is_a_transport_error(
    raw: RawServer, post: Post
) -> None:
    async def script(peer: Peer, _: int) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")

    raw.script = script
    with pytest.raises(TransportError):
        await post(raw.base)


async def test_an_answer_that_ends_at_the_close_counts(raw: RawServer, post: Post) -> None:
    async def script(peer: Peer, number: int) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 202 Accepted\r\n\r\nuntil the close")

    raw.script = script
    for _ in range(2):  # the connection ended with its answer: the next one is new
        answer = await post(raw.base)
        assert (answer.status, answer.excerpt) == (202, b"until the close")
    assert raw.connections == 2


async def test_an_http10_answer_is_read_and_its_connection_not_kept(
    raw: RawServer, post: Post
) -> None:
    async def script(peer: Peer, _: int) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")

    raw.script = script
    for _ in range(2):
        assert (await post(raw.base)).status == 200
    assert raw.connections == 2


async def test_a_half_close_after_the_answer_means_a_new_connection_next(
    raw: RawServer, post: Post, wait_until: WaitUntil
) -> None:
    closed: list[int] = []

    async def script(peer: Peer, number: int) -> None:
        await peer.request()
        await peer.send(OK)
        peer.writer.write_eof()  # our side is done; still reading
        if await peer.closed_by_client():
            closed.append(number)

    raw.script = script
    assert (await post(raw.base)).status == 200
    # The client must notice the half-close and hang up, not keep the connection for later.
    await wait_until(lambda: closed == [0], within=5, what="the client closed connection 0")
    assert (await post(raw.base)).status == 200
    assert (raw.connections, len(raw.requests)) == (2, 2)


async def test_chunked_with_trailers_is_read_whole_and_the_connection_kept(
    raw: RawServer, post: Post
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        b"5\r\nhello\r\n6;note=x\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
    )

    async def script(peer: Peer, _: int) -> None:
        while await peer.request() is not None:
            await peer.send(chunked)

    raw.script = script
    for _ in range(3):
        answer = await post(raw.base)
        assert (answer.status, answer.excerpt) == (200, b"hello world")
    assert raw.connections == 1


@pytest.mark.parametrize("separately", [False, True], ids=["one-write", "two-writes"])
async def test_informational_answers_are_skipped(
    raw: RawServer, post: Post, separately: bool
) -> None:
    informational = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    )
    final = b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\nRetry-After: 3\r\n\r\ncreated"

    async def script(peer: Peer, _: int) -> None:
        while await peer.request() is not None:
            if separately:
                await peer.send(informational)
                await peer.send(final)
            else:
                await peer.send(informational + final)

    raw.script = script
    for _ in range(2):
        answer = await post(raw.base)
        assert (answer.status, answer.retry_after, answer.excerpt) == (201, "3", b"created")
    assert raw.connections == 1


async def test_connection_close_in_the_answer_is_honoured(raw: RawServer, post: Post) -> None:
    async def script(peer: Peer, _: int) -> None:
        while await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")

    raw.script = script
    for _ in range(3):
        assert (await post(raw.base)).status == 200
    assert raw.connections == 3


async def test_the_keep_alive_timeout_race(raw: RawServer, post: Post, client: str) -> None:
    """The receiver closes a kept-alive connection just as our next request arrives on it."""

    async def script(peer: Peer, number: int) -> None:
        if number == 0:
            await peer.request()
            await peer.send(OK)
            await peer.request()  # read, then closed unanswered: the idle timeout's race
            return
        await answer_every_request(peer, number)

    raw.script = script
    assert (await post(raw.base)).status == 200
    if client == "lean":
        # Retried once on a fresh connection. The receiver read the request on the closing
        # connection too: that is the rare duplicate the delivery id makes harmless.
        assert (await post(raw.base)).status == 200
        assert (raw.connections, len(raw.requests)) == (2, 3)
    else:
        with pytest.raises(TransportError):  # aiohttp never retries a POST
            await post(raw.base)
        assert (raw.connections, len(raw.requests)) == (1, 2)


async def test_a_reused_connection_cut_mid_answer_is_not_retried(
    raw: RawServer, post: Post
) -> None:
    async def script(peer: Peer, number: int) -> None:
        await peer.request()
        await peer.send(OK)
        await peer.request()
        await peer.send(b"HTTP/1.1 200")  # a byte of an answer came: the request was seen

    raw.script = script
    assert (await post(raw.base)).status == 200
    with pytest.raises(TransportError):
        await post(raw.base)
    assert (raw.connections, len(raw.requests)) == (1, 2)


async def test_bytes_nobody_asked_for_end_the_connection(raw: RawServer, post: Post) -> None:
    async def script(peer: Peer, _: int) -> None:
        while await peer.request() is not None:
            await peer.send(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")

    raw.script = script
    for _ in range(2):
        answer = await post(raw.base)
        assert (answer.status, answer.excerpt) == (200, b"ok")
    assert raw.connections == 2  # the second request never read the first one's extra answer


async def test_an_answer_before_the_body_was_read(raw: RawServer, post: Post) -> None:
    async def script(peer: Peer, _: int) -> None:
        head = await peer.request(body=False)
        assert head is not None
        await peer.send(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig")
        await peer.reader.read()  # then drain what the client still sends

    raw.script = script
    answer = await post(raw.base, body=b"x" * 4_000_000, timeout=10)
    assert (answer.status, answer.excerpt) == (413, b"big")


async def test_switching_protocols_is_an_answer_not_an_upgrade(raw: RawServer, post: Post) -> None:
    async def script(peer: Peer, _: int) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\x00\x00")
        await peer.closed_by_client()

    raw.script = script
    assert (await post(raw.base)).status == 101


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, so a connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


async def test_a_connect_that_hangs_hits_the_deadline(full_backlog: int, post: Post) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await post(f"http://127.0.0.1:{full_backlog}/hooks", timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0, f"{elapsed:.2f}s"


async def test_a_receiver_that_never_reads_hits_the_deadline(raw: RawServer, post: Post) -> None:
    async def script(peer: Peer, _: int) -> None:
        await asyncio.Event().wait()  # accepts, never reads: our write stalls

    raw.script = script
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await post(raw.base, body=b"x" * 64_000_000, timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.5, f"{elapsed:.2f}s"


async def test_a_dead_first_address_costs_no_attempt(client: str) -> None:
    """A name with two approved addresses, the first of which never answers a connect: Happy
    Eyeballs tries the second 250 ms in, well within the deadline."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.2", 0))
        dead.listen(0)
        port = dead.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.2", port))
        served: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            served.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(OK)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", port)
        resolver = StubResolver({"two.test": ["127.0.0.2", "127.0.0.1"]})
        transport = open_client(client, resolver=resolver)
        try:
            started = time.monotonic()
            answer = await transport.post(URL(f"http://two.test:{port}/"), {}, b"", 5, None)
            assert answer.status == 200
            assert time.monotonic() - started < 2.0
            assert len(served) == 1
        finally:
            await transport.close()
            server.close()
            for filler in fillers:
                filler.close()
