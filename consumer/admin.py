"""The admin port: /metrics, /healthz, /readyz and the status page at /.

It only reads what the hooks keep (through the callables it is given); it never reaches
into the lanes or the listener, so a scrape cannot disturb delivery beyond its own CPU time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

import structlog
from aiohttp import web

from .health import Verdict

log = structlog.get_logger(__name__)


class AdminPortUnavailable(Exception):
    """The admin server could not listen where the config says."""


class Metrics(Protocol):
    content_type: str

    def exposition(self) -> bytes: ...


class AdminServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Metrics,
        health: Callable[[], Verdict],
        readiness: Callable[[], Verdict],
        status_page: Callable[[], str],
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._health = health
        self._readiness = readiness
        self._status_page = status_page
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port listened on: the one asked for, or the one the system chose for 0."""
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        app.router.add_get("/readyz", self._serve_readiness)
        app.router.add_get("/", self._serve_status)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except OSError as exc:
            await runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise AdminPortUnavailable(
                f"cannot listen on {self._host}:{self._port} (admin.host, admin.port): {reason}"
            ) from exc
        self._runner = runner
        self._port = runner.addresses[0][1]
        # At debug: a start that fails later must still be one line on stderr.
        log.debug("admin.listening", host=self._host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._metrics.exposition(),
            headers={"Content-Type": self._metrics.content_type},
        )

    async def _serve_health(self, request: web.Request) -> web.Response:
        return _verdict(self._health())

    async def _serve_readiness(self, request: web.Request) -> web.Response:
        return _verdict(self._readiness())

    async def _serve_status(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self._status_page(),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )


def _verdict(verdict: Verdict) -> web.Response:
    return web.Response(
        status=200 if verdict.ok else 503,
        text=("ok: " if verdict.ok else "unavailable: ") + verdict.reason + "\n",
        headers={"Cache-Control": "no-store"},
    )
