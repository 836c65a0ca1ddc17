"""The admin server on a free loopback port, with simple stand-ins for what it reads."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from consumer.admin import AdminPortUnavailable, AdminServer
from consumer.health import Verdict


class State:
    def __init__(self) -> None:
        self.health = Verdict(True, "event loop lag 3 ms")
        self.readiness = Verdict(False, "waiting for joining the consumer group")
        self.page = "<!doctype html><title>status</title>"


class FixedMetrics:
    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.scrapes = 0

    def exposition(self) -> bytes:
        self.scrapes += 1
        return b'webhook_consumer_build_info{version="0.1.0"} 1.0\n'


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, State, FixedMetrics]]:
    state, metrics = State(), FixedMetrics()
    admin = AdminServer(
        "127.0.0.1",
        0,
        metrics=metrics,
        health=lambda: state.health,
        readiness=lambda: state.readiness,
        status_page=lambda: state.page,
    )
    await admin.start()
    try:
        assert admin.port > 0
        yield f"http://127.0.0.1:{admin.port}", state, metrics
    finally:
        await admin.stop()


async def fetch(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_metrics_in_the_text_format(served: tuple[str, State, FixedMetrics]) -> None:
    url, _, metrics = served
    status, content_type, body = await fetch(f"{url}/metrics")
    assert (status, content_type) == (200, FixedMetrics.content_type)
    assert body == 'webhook_consumer_build_info{version="0.1.0"} 1.0\n'
    assert metrics.scrapes == 1


async def test_health_and_readiness_answer_their_verdicts(
    served: tuple[str, State, FixedMetrics],
) -> None:
    url, state, _ = served
    assert (await fetch(f"{url}/healthz"))[::2] == (200, "ok: event loop lag 3 ms\n")
    assert (await fetch(f"{url}/readyz"))[::2] == (
        503,
        "unavailable: waiting for joining the consumer group\n",
    )
    state.readiness = Verdict(True, "ready")
    state.health = Verdict(False, "the event loop monitor has not run for 25 s")
    assert (await fetch(f"{url}/readyz"))[::2] == (200, "ok: ready\n")
    assert (await fetch(f"{url}/healthz"))[::2] == (
        503,
        "unavailable: the event loop monitor has not run for 25 s\n",
    )


async def test_the_status_page_is_html(served: tuple[str, State, FixedMetrics]) -> None:
    url, state, _ = served
    status, content_type, body = await fetch(f"{url}/")
    assert (status, content_type, body) == (200, "text/html; charset=utf-8", state.page)
    assert (await fetch(f"{url}/nothing-here"))[0] == 404


async def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin = AdminServer(
            "127.0.0.1",
            port,
            metrics=FixedMetrics(),
            health=lambda: Verdict(True, ""),
            readiness=lambda: Verdict(True, ""),
            status_page=lambda: "",
        )
        expected = f"cannot listen on 127.0.0.1:{port} \\(admin.host, admin.port\\): Address"
        with pytest.raises(AdminPortUnavailable, match=expected):
            await admin.start()
        await admin.stop()  # nothing to stop: harmless
