"""TLS: verified by default, a private CA through `ca_bundle`, host names checked."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from consumer.outcome import Kind, Outcome
from tests.support.tools import tool

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, SendOnce, ServeHooks


def _self_signed(folder: Path, name: str, *extra: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    openssl = tool("openssl")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", *extra,
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` only (not for any IP address)."""
    folder = tmp_path_factory.mktemp("tls")
    return _self_signed(folder, "localhost", "-addext", "subjectAltName=DNS:localhost")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not sign the server's certificate."""
    return _self_signed(tmp_path_factory.mktemp("other"), "other")[0]


@pytest.fixture
async def https(
    certificate: tuple[Path, Path], serve_hooks: ServeHooks
) -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text="ok")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    async with serve_hooks(handle, context) as runner:
        port = runner.addresses[0][1]
        await web.TCPSite(runner, "127.0.0.2", port, ssl_context=context).start()
        yield port, seen


@pytest.fixture
def send(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, send_once: SendOnce, https: Any
) -> Any:
    port, _ = https

    async def run(host: str = "localhost", **top: Any) -> Outcome:
        channel = top.pop("channel", {})
        _, catalog = build_catalog(
            [channel_cfg("tls", url=f"https://{host}:{port}/hooks", **channel)], **top
        )
        return await send_once(catalog.channels["tls"])

    return run


async def test_an_unknown_ca_is_refused_by_default(send: Any, https: Any) -> None:
    outcome = await send()
    assert outcome.kind is Kind.CONNECTION
    assert "certificate verify failed" in outcome.message
    assert https[1] == []


async def test_the_configured_ca_bundle_is_trusted(
    send: Any, https: Any, certificate: tuple[Path, Path]
) -> None:
    outcome = await send(tls={"ca_bundle": str(certificate[0])})
    assert outcome.kind is Kind.DELIVERED
    assert https[1] == ["/hooks"]


async def test_a_channel_ca_bundle_overrides_the_global_one(
    send: Any, certificate: tuple[Path, Path], other_ca: Path
) -> None:
    trusted = {"ca_bundle": str(certificate[0])}
    assert (await send(tls={"ca_bundle": str(other_ca)}, channel={"tls": trusted})).ok
    outcome = await send(tls=trusted, channel={"tls": {"ca_bundle": str(other_ca)}})
    assert outcome.kind is Kind.CONNECTION


async def test_the_host_name_is_checked_against_the_certificate(
    send: Any, https: Any, certificate: tuple[Path, Path]
) -> None:
    outcome = await send("127.0.0.2", tls={"ca_bundle": str(certificate[0])})
    assert outcome.kind is Kind.CONNECTION
    assert "certificate" in outcome.message.lower()
    assert https[1] == []
