"""`client_options`: what every Kafka client connects with, for each security protocol."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka.abc import AbstractTokenProvider

from consumer.config import KafkaConfig, parse_config
from consumer.kafkatools import client_options

from ..pki import Authority, write

if TYPE_CHECKING:
    from .conftest import WaitUntil

PASSWORD = "kafka-Pa55word-xyz"
KEY_PASSWORD = "key-Pa55word-abc"


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path
    client_cert: Path
    client_key: Path  # encrypted with KEY_PASSWORD
    server: ssl.SSLContext  # requires a client certificate signed by the CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority("kafka-test-ca")
    server, client = ca.issue_server("127.0.0.1"), ca.issue_client("webhook-consumer")
    server_context = ssl.create_default_context(
        ssl.Purpose.CLIENT_AUTH, cafile=write(folder / "ca.pem", ca.cert_pem)
    )
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_cert_chain(write(folder / "server.pem", server.cert_pem, server.key_pem))
    return Pki(
        folder=folder,
        ca=folder / "ca.pem",
        client_cert=write(folder / "client.pem", client.cert_pem),
        client_key=write(folder / "client.key", client.key_pem_encrypted(KEY_PASSWORD)),
        server=server_context,
    )


def kafka(environ: dict[str, str] | None = None, **fields: Any) -> KafkaConfig:
    data = {"kafka": fields, "channels": [{"name": "a", "url": "http://hooks.example.com/"}]}
    return parse_config(data, "test.yaml", environ or {}).kafka


def test_plaintext_gives_address_and_protocol_only() -> None:
    assert client_options(kafka(bootstrap_servers="k1:9092,k2:9092", client_id="me")) == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "client_id": "me",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_with_scram_takes_the_password_from_the_environment(pki: Pki) -> None:
    environ = {"KAFKA_PASSWORD": PASSWORD}
    config = kafka(
        environ,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password_env="KAFKA_PASSWORD",
        tls={"ca_bundle": str(pki.ca)},
    )
    options = client_options(config, environ)
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "127.0.0.1:9092",
        "client_id": "webhook-consumer",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": PASSWORD,
    }
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    [trusted] = context.get_ca_certs()
    assert trusted["subject"] == ((("commonName", "kafka-test-ca"),),)
    assert client_options(config, environ)["ssl_context"] is context, "built once per config"


def test_a_password_file_loses_its_trailing_newline(tmp_path: Path) -> None:
    password_file = write(tmp_path / "password", PASSWORD.encode() + b"\n")
    config = kafka(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="svc",
        sasl_password_file=str(password_file),
    )
    options = client_options(config)
    assert options["sasl_plain_password"] == PASSWORD
    assert "ssl_context" not in options, "SASL_PLAINTEXT is not TLS"


def test_ssl_without_a_ca_bundle_trusts_the_system_cas_and_checks_host_names() -> None:
    context = client_options(kafka(security_protocol="SSL"))["ssl_context"]
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[tuple[int, list[str]]]:
    """A TLS server that requires a client certificate; records each client's common name."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        seen.extend(value for rdn in peer["subject"] for key, value in rdn if key == "commonName")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=pki.server)
    yield server.sockets[0].getsockname()[1], seen
    server.close()
    await server.wait_closed()


async def test_mutual_tls_presents_the_client_certificate_with_an_encrypted_key(
    pki: Pki, mtls_server: tuple[int, list[str]], wait_until: WaitUntil
) -> None:
    port, seen = mtls_server
    environ = {"KEY_PASSWORD": KEY_PASSWORD}
    config = kafka(
        environ,
        bootstrap_servers=f"127.0.0.1:{port}",
        security_protocol="SSL",
        tls={
            "ca_bundle": str(pki.ca),
            "client_cert": str(pki.client_cert),
            "client_key": str(pki.client_key),
            "client_key_password_env": "KEY_PASSWORD",
        },
    )
    context = client_options(config, environ)["ssl_context"]
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.close()
    await wait_until(lambda: seen == ["webhook-consumer"], what="the server saw our certificate")


async def test_the_server_name_is_verified(pki: Pki, mtls_server: tuple[int, list[str]]) -> None:
    port, _ = mtls_server
    context = client_options(kafka(security_protocol="SSL", tls={"ca_bundle": str(pki.ca)}))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await asyncio.open_connection(
            "127.0.0.1", port, ssl=context["ssl_context"], server_hostname="kafka.example.com"
        )


async def test_oauthbearer_reads_the_token_file_at_every_login(tmp_path: Path) -> None:
    token_file = write(tmp_path / "token", b"first.token.\n")
    options = client_options(
        kafka(
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            sasl_oauth_token_file=str(token_file),
        )
    )
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, AbstractTokenProvider)
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    assert "sasl_plain_password" not in options
    assert await provider.token() == "first.token."
    write(token_file, b"rotated.token.")  # as Kubernetes replaces a projected token
    assert await provider.token() == "rotated.token."
