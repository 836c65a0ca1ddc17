"""A loopback TCP proxy that misbehaves on command, in a process of its own (so its timing is
not the test's), between the replicas and a redis-server:

- `pass`: bytes flow both ways, after `latency_ms` if set;
- `blackhole`: a partition. Nothing flows and nothing is reset: bytes already sent wait in
  the kernel's buffers, new connections are accepted and left waiting, and all of it flows
  again when the mode changes (as TCP retransmits over a partition that heals);
- `reset`: every connection is cut with a TCP reset, and new ones are reset at once.

    python -m tests.faults.proxy PORT_FILE UPSTREAM_PORT

It writes "<proxy port> <control port>" to PORT_FILE; the control port serves
POST /mode {"mode": "blackhole", "latency_ms": 0}. `FaultProxy` drives it from a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.integration.helper_process import (
    HelperProcess,
    ahead_of_the_load,
    ready,
    until_stopped,
)
from tests.support.servers import LoopbackServer

MODES = ("pass", "blackhole", "reset")
_CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: what a peer that lost the connection's state sends."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Proxy:
    def __init__(self, upstream: int) -> None:
        self._upstream = upstream
        self.mode = "pass"
        self.latency = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._open: set[asyncio.StreamWriter] = set()

    def set_mode(self, mode: str, latency_ms: float) -> None:
        if mode not in MODES:
            raise ValueError(f"expected one of {MODES}, got {mode!r}")
        self.mode, self.latency = mode, latency_ms / 1000
        if mode == "blackhole":
            self._flowing.clear()
            return
        self._flowing.set()
        if mode == "reset":
            for writer in list(self._open):
                _reset(writer)
            self._open.clear()

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _reset(writer)
            return
        await self._flowing.wait()  # a connection made during a partition waits for the heal
        if self.mode == "reset":
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            _reset(writer)  # nothing listens upstream (Redis restarting): refused, as direct
            return
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for side in (writer, up_writer):
                self._open.discard(side)
                side.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: bytes leave `latency` after they came, in order; during a partition
        they are neither read nor written, so the kernel's buffers hold them."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            while True:
                await self._flowing.wait()
                data = await reader.read(_CHUNK)
                await queue.put((time.monotonic(), data))
                if not data:
                    return

        async def write() -> None:
            while True:
                came, data = await queue.get()
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                wait = came + self.latency - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)  # the scripted latency
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()

        reading = asyncio.create_task(read())
        try:
            await write()
        except (ConnectionError, OSError):
            return
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await reading


class _Control(LoopbackServer):
    """POST /mode {"mode": ..., "latency_ms": ...}: what the proxy does from now on."""

    def __init__(self, proxy: _Proxy) -> None:
        super().__init__()
        self._proxy = proxy

    def routes(self) -> Iterable[web.RouteDef]:
        return [web.post("/mode", self.mode)]

    async def mode(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        self._proxy.set_mode(body["mode"], float(body.get("latency_ms", 0)))
        return web.json_response({"mode": self._proxy.mode})


async def _serve(port_file: Path, upstream: int) -> None:
    ahead_of_the_load()  # its delays are the scripted ones, not the machine's load
    proxy = _Proxy(upstream)
    server = await asyncio.start_server(proxy.client, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    control = _Control(proxy)
    await control.start()
    ready(port_file, port, control.port)
    await until_stopped()
    server.close()
    await control.stop()


class FaultProxy:
    """The proxy process in front of `upstream` (a port on loopback)."""

    def __init__(self, upstream: int) -> None:
        self._process = HelperProcess("tests.faults.proxy", str(upstream))
        self.port = 0
        self._control = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.port, self._control = await self._process.start()

    async def mode(self, mode: str, latency_ms: float = 0) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{self._control}/mode",
                json={"mode": mode, "latency_ms": latency_ms},
            ) as answer,
        ):
            answer.raise_for_status()

    async def stop(self) -> None:
        await self._process.stop()


@contextlib.asynccontextmanager
async def fault_proxy(upstream: int) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    try:
        await proxy.start()
        yield proxy
    finally:
        await proxy.stop()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1]), int(sys.argv[2])))
