"""The fault suite's receiver: verifies every signature over the raw body, counts 2xx answers
per delivery id, and misbehaves as a scenario scripts it (holds its first requests, or cuts
connections for its first seconds).

Lean on purpose: it shares the test process with the suite's bookkeeping, and must never be
what limits the replicas' throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from consumer.signing import verify


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    hold_first: int = 0  # the first this many requests...
    # ...are answered (200) once the test calls `release()`, or after this long at most
    hold_seconds: float = 0.0
    drop_seconds: float = 0.0  # requests arriving this long after the first are cut unanswered


FAST = Misbehaviour()


class FaultReceiver:
    def __init__(self, secrets: Mapping[str, str], misbehaviour: Misbehaviour = FAST) -> None:
        self.secrets = dict(secrets)  # channel (last path segment) -> X-gio-signature key
        self.misbehaviour = misbehaviour
        self.answered: dict[str, int] = {}  # delivery id -> 2xx answers given
        self.answer_times: list[float] = []  # time.monotonic() of every 2xx answer
        self.requests = 0
        self.dropped = 0  # connections cut without an answer
        self.unverified = 0  # bad signatures, answered 401
        self.holding = 0  # requests being held right now
        self.held: list[str] = []  # delivery ids of the requests held, in arrival order
        self.first_request_at: float | None = None
        self._released = asyncio.Event()
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, channel: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{channel}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{channel}", self._handle)
        # Keep-alive is aiohttp's default; the backlog fits every replica's connections at once.
        # A request whose sender died while it was held is still processed (and counted), as
        # a receiver that does its work before answering would.
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, backlog=2048).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()  # the exact bytes sent: what the signature covers
        now = time.monotonic()
        self.requests += 1
        if self.first_request_at is None:
            self.first_request_at = now
        script = self.misbehaviour
        if now - self.first_request_at < script.drop_seconds:
            self.dropped += 1
            if request.transport is not None:  # None: the sender is gone already
                request.transport.abort()  # the sender sees the connection cut, no answer
            return web.Response(status=500)  # never written: the connection is gone
        channel = request.match_info["channel"]
        if not verify(raw, request.headers.get("X-gio-signature", ""), self.secrets[channel]):
            self.unverified += 1
            return web.Response(status=401)
        delivery = request.headers["X-gio-delivery-id"]
        if self.requests <= script.hold_first:
            self.held.append(delivery)
            self.holding += 1
            try:  # the scripted stall: until released, or its longest
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._released.wait(), script.hold_seconds)
            finally:
                self.holding -= 1
        self.answered[delivery] = self.answered.get(delivery, 0) + 1
        self.answer_times.append(time.monotonic())
        self._arrived.set()
        return web.Response(text="ok")

    def release(self) -> None:
        """Answer the held requests now, and hold no more."""
        self._released.set()

    @property
    def delivered(self) -> set[str]:
        return set(self.answered)

    @property
    def duplicates(self) -> int:
        """2xx answers beyond the first for a delivery id: what a receiver had to drop."""
        return sum(self.answered.values()) - len(self.answered)

    async def wait_for(self, predicate: Callable[[], bool], within: float) -> bool:
        """Wait until predicate() holds, re-checking after every 2xx answer; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(left, 0.5))
        return True
