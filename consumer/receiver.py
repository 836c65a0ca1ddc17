"""A webhook receiver that verifies every signature over the raw body and records what came.

Used by `webhook-consumer demo` and by the integration tests; also a reference for customers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .signing import verify
from .standard_webhooks import verify_standard


@dataclass(frozen=True, slots=True)
class Received:
    channel: str  # the last path segment the request was sent to
    delivery_id: str
    attempt: int
    body: dict[str, Any]
    verified: bool
    at: float  # time.monotonic() on arrival
    status: int  # what the receiver answered
    headers: Mapping[str, str] = field(default_factory=dict)
    standard_verified: bool | None = None  # the Standard Webhooks signature; None: not sent


@dataclass(slots=True)
class Script:
    """What a path answers: queued statuses first, then `default`; `hang` never answers;
    `echo` answers with the request headers, as some debugging endpoints do."""

    queue: deque[int] = field(default_factory=deque)
    default: int = 200
    hang: bool = False
    retry_after: str | None = None
    echo: bool = False


class Receiver:
    def __init__(
        self,
        secrets: Mapping[str, str],
        standard_secrets: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.secrets = dict(secrets)  # path segment -> secret; unknown paths verify with ""
        # path segment -> whsec_ secrets accepted for webhook-signature (any of them may match)
        self.standard_secrets = {k: list(v) for k, v in (standard_secrets or {}).items()}
        self.received: list[Received] = []
        self.scripts: dict[str, Script] = defaultdict(Script)
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def answer(
        self,
        channel: str,
        statuses: Iterable[int] = (),
        default: int = 200,
        hang: bool = False,
        retry_after: str | None = None,
        echo: bool = False,
    ) -> None:
        self.scripts[channel] = Script(deque(statuses), default, hang, retry_after, echo)

    def url(self, channel: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hooks/{channel}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/hooks/{channel}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        channel = request.match_info["channel"]
        raw = await request.read()  # the raw bytes, exactly as sent: that is what is signed
        verified = verify(raw, request.headers.get("X-gio-signature", ""), self.secret_for(channel))
        standard = None
        if "webhook-signature" in request.headers:
            # Sent, so it must verify: a wrong Standard Webhooks signature fails the request.
            standard = verify_standard(raw, request.headers, self.standard_secrets_for(channel))
            verified = verified and standard
        script = self.scripts[channel]
        if script.hang:
            await asyncio.Event().wait()  # never answers; the sender's timeout must fire
        status = script.queue.popleft() if script.queue else script.default
        if not verified:
            status = 401
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {"unparseable": raw.decode("utf-8", "replace")}
        self.record(
            Received(
                channel=channel,
                delivery_id=request.headers.get("X-gio-delivery-id", ""),
                attempt=int(request.headers.get("X-gio-attempt", "0")),
                body=body,
                verified=verified,
                at=time.monotonic(),
                status=status,
                headers=dict(request.headers),
                standard_verified=standard,
            )
        )
        headers = (
            {"Retry-After": script.retry_after} if script.retry_after and status != 200 else {}
        )
        text = "ok" if status < 300 else "no"
        if script.echo:
            text = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        return web.Response(status=status, text=text, headers=headers)

    def secret_for(self, channel: str) -> str:
        """The X-gio-signature key of a path segment; "" for paths nobody configured."""
        return self.secrets.get(channel, "")

    def standard_secrets_for(self, channel: str) -> list[str]:
        return self.standard_secrets.get(channel, [])

    def record(self, received: Received) -> None:
        """Keep what arrived for `received`/`wait_for`; a long-running receiver logs instead."""
        self.received.append(received)
        self._arrived.set()

    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300 and r.verified]

    async def wait_for(self, predicate: Any, within: float) -> bool:
        """Wait until predicate(self) holds, re-checking on every arrival; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate(self):
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(left, 0.5))
        return True
