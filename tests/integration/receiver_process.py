"""A receiver in a process of its own, so the times it records are its own clock's, free of
the test's and the replicas' work: arrival times for rate checks that a loaded event loop
cannot skew.

    python -m tests.integration.receiver_process PORT_FILE

It listens on a free loopback port (written to PORT_FILE) and serves:

- POST /secrets {"channel": "secret", ...}: the keys to verify each channel's signatures with;
- POST /hooks/{channel}: verifies the signature over the raw body (401 if wrong), records
  (channel, delivery id, arrival on its monotonic clock, the body's timestamp, status), and
  answers as the channel's script says;
- POST /script/{channel} {"status": 503, "hold": true, "retry_after": "60"}: what to answer;
  `hold` keeps requests unanswered until /release;
- POST /release: answers every held request at once (then as scripted);
- GET /arrivals: every record so far, as JSON lists.

`RemoteReceiver` starts it, drives it and reads it from a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.support.polling import until
from tests.support.servers import HookReceiver, signed

from .helper_process import HelperProcess, ahead_of_the_load, ready, until_stopped


@dataclass(frozen=True, slots=True)
class Arrival:
    channel: str
    delivery_id: str
    at: float  # the receiver's monotonic clock, on arrival
    sent_ms: int  # the body's timestamp: when the sender built it, ms since the epoch
    status: int  # what it answered


class _Server(HookReceiver):
    client_max_size = 16 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}
        self.arrivals: list[tuple[str, str, float, int, int]] = []
        self.scripts: dict[str, dict[str, Any]] = {}
        self.released = asyncio.Event()

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            *super().routes(),
            web.post("/secrets", self.set_secrets),
            web.post("/script/{channel}", self.script),
            web.post("/release", self.release),
            web.get("/arrivals", self.listing),
        ]

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        at = time.monotonic()
        channel = request.match_info["channel"]
        script = self.scripts.get(channel, {})
        status = int(script.get("status", 200))
        if not signed(raw, request, self.secrets.get(channel, "")):
            status = 401
        try:
            sent = int(orjson.loads(raw)["timestamp"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            sent = 0
        delivery = request.headers.get("X-gio-delivery-id", "")
        self.arrivals.append((channel, delivery, at, sent, status))
        if script.get("hold") and status != 401:
            released = self.released
            await released.wait()  # the scripted stall, until the test releases it
        headers = {"Retry-After": str(script["retry_after"])} if script.get("retry_after") else {}
        return web.Response(status=status, text="ok" if status < 300 else "no", headers=headers)

    async def set_secrets(self, request: web.Request) -> web.Response:
        self.secrets.update(await request.json())
        return web.json_response({})

    async def script(self, request: web.Request) -> web.Response:
        self.scripts[request.match_info["channel"]] = await request.json()
        return web.json_response({})

    async def release(self, _request: web.Request) -> web.Response:
        for script in self.scripts.values():
            script.pop("hold", None)
        self.released.set()
        self.released = asyncio.Event()
        return web.json_response({})

    async def listing(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.arrivals), content_type="application/json")


async def _serve(port_file: Path) -> None:
    ahead_of_the_load()  # else, on 2 shared cores, a second's arrivals get one stamp
    server = _Server()
    await server.start()
    ready(port_file, server.port)
    await until_stopped()
    await server.stop()


class RemoteReceiver:
    """The receiver process, seen from a test: `url()` for the config, `secrets` (the test's
    Setup fills them; `share_secrets` hands them over), and its records."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.port = 0
        self._process = HelperProcess("tests.integration.receiver_process")
        self._session: aiohttp.ClientSession | None = None

    def url(self, channel: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{channel}"

    async def start(self) -> None:
        """Start the process; return once it listens."""
        [self.port] = await self._process.start()
        self._session = aiohttp.ClientSession()

    async def share_secrets(self) -> None:
        await self._post("/secrets", dict(self.secrets))

    async def script(
        self, channel: str, status: int = 200, hold: bool = False, retry_after: str | None = None
    ) -> None:
        body: dict[str, Any] = {"status": status, "hold": hold}
        if retry_after is not None:
            body["retry_after"] = retry_after
        await self._post(f"/script/{channel}", body)

    async def release(self) -> None:
        await self._post("/release", {})

    async def arrivals(self) -> list[Arrival]:
        assert self._session is not None
        async with self._session.get(f"http://127.0.0.1:{self.port}/arrivals") as answer:
            return [Arrival(*row) for row in orjson.loads(await answer.read())]

    async def wait_for(self, condition: Callable[[list[Arrival]], bool], within: float) -> bool:
        """Poll the records until `condition` holds; False after `within` seconds."""

        async def holds() -> bool:
            return condition(await self.arrivals())

        return await until(holds, within, every=0.2)

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        assert self._session is not None
        async with self._session.post(f"http://127.0.0.1:{self.port}{path}", json=body) as answer:
            answer.raise_for_status()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._process.stop()


def delivered(arrivals: list[Arrival]) -> set[str]:
    """Delivery ids answered 2xx."""
    return {a.delivery_id for a in arrivals if 200 <= a.status < 300}


@contextlib.asynccontextmanager
async def remote_receiver() -> AsyncIterator[RemoteReceiver]:
    """A started receiver process, always stopped."""
    receiver = RemoteReceiver()
    try:
        await receiver.start()
        yield receiver
    finally:
        await receiver.stop()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1])))
