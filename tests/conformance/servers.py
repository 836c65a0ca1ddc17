"""The receivers the conformance suite sends to: the Go receiver of bench/, an aiohttp server,
and a raw-socket server that scripts each connection byte by byte."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web

from bench.receiver import build
from consumer.signing import verify

SECRET = "conformance-secret"


GO_PATHS = ("/hooks/a", "/hooks/b", "/hooks/c")


@dataclass
class GoReceiver:
    """bench/receiver as a process: 200 on kept-alive connections, signatures verified (401 on a
    bad one), `/status/503` answered 503, `/hang` never answered."""

    base: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def go_receiver() -> Iterator[GoReceiver]:
    args = [str(build())]  # Go from deploy/local/go: PATH's if recent enough, else fetched
    args += ["-secret", ",".join(f"{p}={SECRET}" for p in GO_PATHS)]
    args += ["-status", "/status/503=503,/status/404=404", "-hang", "/hang"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("listening "):
            raise RuntimeError(f"the Go receiver did not start: {line!r}")
        yield GoReceiver("http://" + line.split()[1], process)
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class AiohttpReceiver:
    """An aiohttp server; `responses` scripts what a path answers (default 200 "ok")."""

    base: str = ""
    seen: list[tuple[str, dict[str, str], bytes, bool]] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)  # peer ports the requests came from
    responses: dict[str, Callable[[], web.StreamResponse]] = field(default_factory=dict)
    streams: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = field(
        default_factory=dict
    )


@contextlib.asynccontextmanager
async def aiohttp_receiver(host: str = "127.0.0.1") -> AsyncIterator[AiohttpReceiver]:
    state = AiohttpReceiver()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        signature = request.headers.get("X-gio-signature", "")
        state.seen.append(
            (request.path, dict(request.headers), body, verify(body, signature, SECRET))
        )
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            state.connections.add(peer[1])
        if request.path in state.streams:
            return await state.streams[request.path](request)
        if request.path in state.responses:
            return state.responses[request.path]()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, host, 0, backlog=512).start()
    state.base = f"http://{host}:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


class Peer:
    """One accepted connection, as a script sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self, body: bool = True) -> bytes | None:
        """The next request's head (and body, unless told not to read it); None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        if body:
            await self.reader.readexactly(length)
        return head

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def closed_by_client(self) -> bool:
        """Until the client closes its side; True when it did."""
        return await self.reader.read() == b""


Script = Callable[[Peer, int], Awaitable[None]]  # (the connection, its number from 0)


@dataclass
class RawServer:
    port: int = 0
    script: Script | None = None
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)  # every request head read
    finished: list[int] = field(default_factory=list)  # connections whose script returned

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def raw_server() -> AsyncIterator[RawServer]:
    state = RawServer()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = state.connections
        state.connections += 1
        peer = Peer(reader, writer)
        original = peer.request

        async def counted(body: bool = True) -> bytes | None:
            head = await original(body)
            if head is not None:
                state.requests.append(head)
            return head

        peer.request = counted  # type: ignore[method-assign]
        assert state.script is not None
        try:
            await state.script(peer, number)
        except (ConnectionError, OSError):
            pass  # the client hung up: what the script did until then is what counts
        finally:
            state.finished.append(number)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=512)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
