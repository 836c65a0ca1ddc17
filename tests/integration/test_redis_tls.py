"""rediss:// against a real TLS redis-server: the certificate and host name are always checked."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumer.attributes import AttributesUnavailable
from consumer.attributes.redis import RedisAttributeStore
from tests.support.ports import free_port, wait_for_port
from tests.support.tools import tool

# OpenSSL's words for a chain that ends in a CA nobody configured.
UNKNOWN_ISSUER = r"certificate verify failed: (self-signed certificate|unable to get local issuer)"


@dataclass(frozen=True, slots=True)
class TlsRedis:
    port: int
    ca_bundle: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """A CA of this test's own, and a server certificate it signed for 127.0.0.1 only."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=webhook-consumer test CA", cwd=folder)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=redis test server", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext",
             cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    tool("openssl")
    server_program = tool("redis-server")
    folder = tmp_path_factory.mktemp("tls-redis")
    _certificates(folder)
    port = free_port()
    server = subprocess.Popen(
        [server_program, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, server=server)
        yield TlsRedis(port, folder / "ca.pem")
    finally:
        server.terminate()
        server.wait(timeout=10)


def _store(url: str, ca_bundle: Path | None = None) -> RedisAttributeStore:
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    return RedisAttributeStore(url, key_prefix=prefix, timeout_seconds=3, ca_bundle=ca_bundle)


async def test_a_server_signed_by_the_configured_ca_is_used(tls_redis: TlsRedis) -> None:
    store = _store(f"rediss://127.0.0.1:{tls_redis.port}/0", tls_redis.ca_bundle)
    try:
        await store.put_many([("u1", {"over": "tls"})])
        assert await store.get_many(["u1"]) == {"u1": {"over": "tls"}}
    finally:
        await store.close()


async def test_a_certificate_from_an_unknown_ca_is_refused(tls_redis: TlsRedis) -> None:
    store = _store(f"rediss://127.0.0.1:{tls_redis.port}/0")  # the system's CAs only
    try:
        with pytest.raises(AttributesUnavailable, match=UNKNOWN_ISSUER):
            await store.get_many(["u1"])
    finally:
        await store.close()


async def test_a_certificate_for_another_host_name_is_refused(tls_redis: TlsRedis) -> None:
    # The certificate names 127.0.0.1 only; "localhost" reaches the same server.
    store = _store(f"rediss://localhost:{tls_redis.port}/0", tls_redis.ca_bundle)
    try:
        with pytest.raises(
            AttributesUnavailable, match="certificate verify failed: Hostname mismatch"
        ):
            await store.get_many(["u1"])
    finally:
        await store.close()
