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
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from tests.support.servers import HookReceiver, signed


@dataclass(frozen=True, slots=True)
class Misbehaviour:
    hold_first: int = 0  # the first this many requests...
    # ...are answered (200) once the test calls `release()`, or after this long at most
    hold_seconds: float = 0.0
    drop_seconds: float = 0.0  # requests arriving this long after the first are cut unanswered


FAST = Misbehaviour()


class FaultReceiver(HookReceiver):
    """`wait_for(condition, within)` checks again after every 2xx answer. A request whose
    sender died while it was held is still processed (and counted), as a receiver that does
    its work before answering would."""

    def __init__(self, secrets: Mapping[str, str], misbehaviour: Misbehaviour = FAST) -> None:
        super().__init__()
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

    async def hook(self, request: web.Request) -> web.Response:
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
        if not signed(raw, request, self.secrets[channel]):
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
        self.arrived()
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
