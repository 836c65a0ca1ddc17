"""The HTTP servers a test runs itself (receivers, an OTLP collector, a helper process's
control port): an aiohttp app on a free loopback port, and the wait for what they recorded.

A test's receiver must never be what limits the replicas: aiohttp keeps connections alive,
and the listen backlog holds every connection a fleet of replicas opens at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from aiohttp import web

from consumer.signing import verify

from .polling import until

BACKLOG = 2048


class LoopbackServer:
    """Serves `routes()` on 127.0.0.1 at a port the OS picks. A subclass records what came,
    calls `arrived()` when it did, and a test waits with `wait_for`."""

    client_max_size = 1024**2  # aiohttp's default; a receiver of big bodies raises it

    def __init__(self) -> None:
        self.port = 0
        self._news = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def routes(self) -> Iterable[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application(client_max_size=self.client_max_size)
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, backlog=BACKLOG).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def arrived(self) -> None:
        """Something the tests wait on changed: check their conditions again now."""
        self._news.set()

    async def wait_for(self, condition: Callable[[], bool], within: float) -> bool:
        """Until `condition()` holds, checked after every arrival; False at the deadline."""
        return await until(condition, within, every=0.5, news=self._news)


class HookReceiver(LoopbackServer):
    """A webhook receiver: channel `name` sends to `url(name)`, answered by `hook`."""

    def url(self, channel: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{channel}"

    def routes(self) -> Iterable[web.RouteDef]:
        return [web.post("/hooks/{channel}", self.hook)]

    async def hook(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


def signed(raw: bytes, request: web.Request, secret: str) -> bool:
    """Whether `X-gio-signature` is the HMAC of these exact bytes (what was sent) with `secret`."""
    return verify(raw, request.headers.get("X-gio-signature", ""), secret)
