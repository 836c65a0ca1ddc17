"""Every conformance test runs once per transport (the `client` fixture) and once per event loop:
asyncio's own and uvloop, which `run` uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
import uvloop

from consumer.transport import Answer, Transport
from tests.transports import open_client
from tests.unit.conftest import wait_until  # noqa: F401 - the shared polling fixture

from .servers import RawServer, raw_server

Post = Callable[..., Any]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def transport(client: str) -> AsyncIterator[Transport]:
    """One transport for the whole test, so connections are pooled between its requests."""
    opened = open_client(client)
    yield opened
    await opened.close()


@pytest.fixture
def post(transport: Transport) -> Post:
    """POST through the transport; returns its Answer, or raises what it raised."""
    from yarl import URL

    async def send(
        url: str,
        body: bytes = b'{"n":1}',
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - the transport's own deadline
        tls: Any = None,
    ) -> Answer:
        given = {"Content-Type": "application/json", **(headers or {})}
        return await transport.post(URL(url), given, body, timeout, tls)

    return send


@pytest.fixture
async def raw() -> AsyncIterator[RawServer]:
    """A raw-socket server; set its `script` before sending."""
    async with raw_server() as server:
        yield server
