"""TLS and names: a stub DNS name resolves once to a guarded loopback address; the Host header
and SNI carry the name; the certificate is verified against it, and a wrong one refused."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from yarl import URL

from consumer.transport import Transport, TransportError
from tests.pki import Authority, write
from tests.support.resolver import StubResolver
from tests.transports import open_client

NAME = "hooks.test"


@dataclass
class Tls:
    port: int
    ca: Path
    server_names: list[str | None] = field(default_factory=list)  # SNI of each handshake
    hosts: list[str] = field(default_factory=list)  # Host header of each request
    peers: set[int] = field(default_factory=set)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Path]:
    ca = Authority("conformance CA")
    return ca, write(tmp_path_factory.mktemp("ca") / "ca.pem", ca.cert_pem)


@pytest.fixture
async def tls_server(authority: tuple[Authority, Path], tmp_path: Path) -> AsyncIterator[Tls]:
    ca, ca_file = authority
    issued = ca.issue_server(NAME)  # for the name only, not for 127.0.0.1
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(
        write(tmp_path / "server.pem", issued.cert_pem),
        write(tmp_path / "server.key", issued.key_pem),
    )
    state = Tls(0, ca_file)

    def sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        state.server_names.append(name)

    context.sni_callback = sni

    async def handle(request: web.Request) -> web.Response:
        state.hosts.append(request.headers["Host"])
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            state.peers.add(peer[1])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


@pytest.fixture
async def resolver_and_transport(
    client: str,
) -> AsyncIterator[tuple[StubResolver, Transport]]:
    resolver = StubResolver({NAME: ["127.0.0.1"]})
    transport = open_client(client, resolver=resolver)
    yield resolver, transport
    await transport.close()


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def test_a_name_is_resolved_once_and_carried_by_host_and_sni(
    tls_server: Tls, resolver_and_transport: tuple[StubResolver, Transport]
) -> None:
    resolver, transport = resolver_and_transport
    url = URL(f"https://{NAME}:{tls_server.port}/hooks")
    context = trusting(tls_server.ca)  # one per channel, as the catalog makes it
    for _ in range(3):
        answer = await transport.post(url, {}, b"{}", 5, context)
        assert (answer.status, answer.excerpt) == (200, b"ok")
    assert resolver.asked == [NAME]
    assert tls_server.server_names == [NAME]  # one handshake: the connection was kept
    assert tls_server.hosts == [f"{NAME}:{tls_server.port}"] * 3
    assert len(tls_server.peers) == 1


async def test_a_certificate_for_another_name_is_refused(
    tls_server: Tls, resolver_and_transport: tuple[StubResolver, Transport]
) -> None:
    _, transport = resolver_and_transport
    url = URL(f"https://127.0.0.1:{tls_server.port}/hooks")  # the certificate names hooks.test
    with pytest.raises((TransportError, OSError)) as refused:
        await transport.post(url, {}, b"{}", 5, trusting(tls_server.ca))
    assert "certificate" in str(refused.value).lower()
    assert tls_server.hosts == []


async def test_an_unknown_ca_is_refused(
    tls_server: Tls, resolver_and_transport: tuple[StubResolver, Transport]
) -> None:
    _, transport = resolver_and_transport
    url = URL(f"https://{NAME}:{tls_server.port}/hooks")
    with pytest.raises((TransportError, OSError)) as refused:
        await transport.post(url, {}, b"{}", 5, None)  # the system's CAs
    assert "certificate verify failed" in str(refused.value).lower()
    assert tls_server.hosts == []
