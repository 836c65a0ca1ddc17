"""The lean transport's pool: idle connections expire, a cancelled request leaves nothing open,
a closed transport opens nothing more."""

from __future__ import annotations

import asyncio
from ipaddress import ip_network
from typing import TYPE_CHECKING

import pytest
from yarl import URL

from consumer.transport import TransportError
from consumer.transport import lean as lean_module
from consumer.transport.lean import LeanTransport
from tests.conformance.servers import Peer, raw_server

if TYPE_CHECKING:
    from .conftest import WaitUntil

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def lean() -> LeanTransport:
    return LeanTransport([ip_network("127.0.0.0/8")])


async def test_an_idle_connection_is_closed_after_the_keep_alive_time(
    monkeypatch: pytest.MonkeyPatch, wait_until: WaitUntil
) -> None:
    monkeypatch.setattr(lean_module, "KEEPALIVE_SECONDS", 0.2)
    hung_up: list[int] = []

    async def script(peer: Peer, number: int) -> None:
        while await peer.request() is not None:
            await peer.send(OK)
        hung_up.append(number)  # the client closed its side

    async with raw_server() as server:
        server.script = script
        transport = lean()
        try:
            assert (await transport.post(URL(server.base), {}, b"", 5, None)).status == 200
            assert hung_up == []
            await wait_until(lambda: hung_up == [0], within=3, what="the idle connection closed")
            assert (await transport.post(URL(server.base), {}, b"", 5, None)).status == 200
            assert server.connections == 2
        finally:
            await transport.close()


async def test_a_cancelled_request_closes_its_connection(wait_until: WaitUntil) -> None:
    hung_up: list[int] = []

    async def script(peer: Peer, number: int) -> None:
        await peer.request()
        if number > 0:
            await peer.send(OK)
            return
        if await peer.closed_by_client():  # never answered: only the client can end it
            hung_up.append(number)

    async with raw_server() as server:
        server.script = script
        transport = lean()
        try:
            task = asyncio.create_task(transport.post(URL(server.base), {}, b"", 30, None))
            await wait_until(lambda: len(server.requests) == 1, what="the request arrived")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await wait_until(lambda: hung_up == [0], what="the connection closed")
            assert (await transport.post(URL(server.base), {}, b"", 5, None)).status == 200
            assert server.connections == 2
        finally:
            await transport.close()


async def test_a_closed_transport_opens_no_connection() -> None:
    async with raw_server() as server:
        transport = lean()
        await transport.close()
        with pytest.raises(TransportError, match="closed"):
            await transport.post(URL(server.base), {}, b"", 5, None)
        assert server.connections == 0


async def test_a_header_value_with_a_line_break_is_never_sent() -> None:
    async with raw_server() as server:
        transport = lean()
        try:
            headers = {"X-gio-delivery-id": "d-1\r\nX-Injected: 1"}
            with pytest.raises(ValueError, match="line break"):
                await transport.post(URL(server.base), headers, b"", 5, None)
        finally:
            await transport.close()
        assert server.connections == 0
