"""The guard on real sockets, with loopback spellings only: refused by default, allowed when
`allowed_networks` names them, and the server counts what actually arrived."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from yarl import URL

from consumer.outcome import Kind

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, SendOnce, ServeHooks

LOOPBACK = ["127.0.0.0/8", "::1/128"]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not IPV6, reason="no IPv6 loopback on this machine")


@dataclass
class Local:
    port: int = 0
    arrived: list[str] = field(default_factory=list)  # the local address each request reached


@pytest.fixture
async def local(serve_hooks: ServeHooks) -> AsyncIterator[Local]:
    """One server on 127.0.0.1, 127.0.0.2 and ::1, all on the same port."""
    state = Local()

    async def handle(request: web.Request) -> web.Response:
        state.arrived.append(request.transport.get_extra_info("sockname")[0])  # type: ignore[union-attr]
        return web.Response(text="ok")

    async with serve_hooks(handle) as runner:
        state.port = runner.addresses[0][1]
        await web.TCPSite(runner, "127.0.0.2", state.port).start()
        if IPV6:
            await web.TCPSite(runner, "::1", state.port).start()
        yield state


@pytest.fixture
def send(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, send_once: SendOnce, local: Local
) -> Any:
    _, catalog = build_catalog([channel_cfg("edge", timeout_seconds=5)])

    async def run(host: str, allowed: list[str]) -> Kind:
        channel = replace(catalog.channels["edge"], url=URL(f"http://{host}:{local.port}/hooks"))
        return (await send_once(channel, allowed)).kind

    return run


SPELLINGS = [
    pytest.param("localhost", id="localhost"),
    pytest.param("127.0.0.2", id="127.0.0.2"),
    pytest.param("[::1]", id="::1", marks=needs_ipv6),
    pytest.param("[::ffff:127.0.0.1]", id="ipv4-mapped", marks=needs_ipv6),
]


@pytest.mark.parametrize("host", SPELLINGS)
async def test_loopback_is_refused_by_default_and_allowed_when_listed(
    send: Any, local: Local, host: str
) -> None:
    assert await send(host, []) is Kind.BLOCKED_DESTINATION
    assert local.arrived == []
    assert await send(host, LOOPBACK) is Kind.DELIVERED
    assert len(local.arrived) == 1


async def test_unspecified_address_needs_its_own_entry(send: Any, local: Local) -> None:
    # Linux connects 0.0.0.0 to this host: allowing loopback must not quietly allow it too.
    assert await send("0.0.0.0", []) is Kind.BLOCKED_DESTINATION
    assert await send("0.0.0.0", LOOPBACK) is Kind.BLOCKED_DESTINATION
    assert local.arrived == []
    assert await send("0.0.0.0", ["0.0.0.0/32"]) is Kind.DELIVERED
    assert local.arrived == ["127.0.0.1"]


async def test_legacy_numeric_spellings_are_always_refused(send: Any, local: Local) -> None:
    # aiohttp itself refuses to connect to them, so allowing them could never deliver.
    for host in ("2130706433", "127.1", "0177.0.0.1"):
        assert await send(host, []) is Kind.BLOCKED_DESTINATION
        assert await send(host, LOOPBACK) is Kind.BLOCKED_DESTINATION
    assert local.arrived == []


def _resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, 80)
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _resolves("0x7f.1"), reason="this libc does not read hex IPv4")
async def test_a_hex_spelling_resolves_and_is_judged_by_its_address(
    send: Any, local: Local
) -> None:
    assert await send("0x7f.1", []) is Kind.BLOCKED_DESTINATION
    assert await send("0x7f.1", LOOPBACK) is Kind.DELIVERED
    assert local.arrived == ["127.0.0.1"]
