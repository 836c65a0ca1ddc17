"""The start-up probe turns connection failures into one line an operator can act on."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import aiokafka.errors as errors
import pytest

from consumer.config import KafkaConfig
from consumer.kafkaprobe import KafkaUnavailable, explain, probe

SCRAM = KafkaConfig(
    security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc"
)


def _verify_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "unable to get local issuer certificate"
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            errors.SaslAuthenticationFailed("invalid credentials with SASL mechanism SCRAM"),
            "authentication failed (invalid credentials with SASL mechanism SCRAM)",
        ),
        (
            errors.UnsupportedSaslMechanismError(),
            "the listener does not offer SASL mechanism SCRAM-SHA-512",
        ),
        (
            _verify_error(),
            "the broker's TLS certificate was rejected: unable to get local issuer certificate "
            "(check kafka.tls.ca_bundle)",
        ),
        (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"), "Connection refused"),
        (socket.gaierror(-2, "Name or service not known"), "Name or service not known"),
        (
            FileNotFoundError(2, "No such file or directory", "/var/run/token"),
            "No such file or directory: /var/run/token",
        ),
        (TimeoutError(), "no answer within 20 s"),
        (
            errors.KafkaConnectionError("Connection at 127.0.0.1:9094 closed"),
            "the broker closed the connection (does the listener expect security_protocol "
            "SASL_SSL? a client certificate?)",
        ),
    ],
)
def test_explain_says_what_went_wrong(exc: BaseException, expected: str) -> None:
    assert explain(exc, SCRAM) == expected


async def test_probe_names_every_bootstrap_server_and_why() -> None:
    closed = []
    for _ in range(2):  # ports that were free a moment ago: nothing listens there
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed.append(sock.getsockname()[1])
    servers = ",".join(f"127.0.0.1:{port}" for port in closed)
    with pytest.raises(KafkaUnavailable) as caught:
        await probe(KafkaConfig(bootstrap_servers=servers))
    assert str(caught.value) == (
        f"cannot connect to Kafka (PLAINTEXT): 127.0.0.1:{closed[0]}: Connection refused; "
        f"127.0.0.1:{closed[1]}: Connection refused"
    )


async def test_probe_gives_up_on_a_silent_server(monkeypatch: Any) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never answers the ApiVersions request

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr("consumer.kafkaprobe.PROBE_TIMEOUT_SECONDS", 0.5)
    try:
        with pytest.raises(KafkaUnavailable, match=f"127.0.0.1:{port}: no answer within 0.5 s"):
            await probe(KafkaConfig(bootstrap_servers=f"127.0.0.1:{port}"))
    finally:
        server.close()
        await server.wait_closed()
