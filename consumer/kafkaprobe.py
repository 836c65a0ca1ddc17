"""One connection to each broker before any client starts, so a wrong password, an untrusted
certificate or a wrong protocol fails the start in one clear line.

aiokafka's clients only log why a connection failed and retry: a bootstrap fails as "Unable to
bootstrap", and a broker that rejects the credentials after the bootstrap is retried forever.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Mapping
from typing import Any

import aiokafka.errors as errors
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.protocol.metadata import MetadataRequest

from .config import KafkaConfig
from .kafkatools import client_options

PROBE_TIMEOUT_SECONDS = 20.0  # for opening a connection (TCP, TLS, SASL), and for one request

_CONNECTION_OPTIONS = (
    "client_id",
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "sasl_oauth_token_provider",
)


class KafkaUnavailable(Exception):
    """The cluster cannot be used with this configuration; the message says why, in one line."""


async def probe(kafka: KafkaConfig, environ: Mapping[str, str] | None = None) -> None:
    """Connect to a bootstrap server, then to every broker it advertises, as the clients will;
    raise KafkaUnavailable naming each address that failed and why."""
    options = client_options(kafka, environ)
    connect = {k: options[k] for k in _CONNECTION_OPTIONS if k in options}
    how = _how(kafka)
    failures: list[str] = []
    for host, port, _ in collect_hosts(kafka.bootstrap_servers, randomize=False):
        brokers, why = await _check(host, port, connect, kafka)
        if why is not None:
            failures.append(f"{host}:{port}: {why}")
            continue
        results = await asyncio.gather(*(_check(h, p, connect, kafka) for h, p in brokers))
        broken = [
            f"{h}:{p}: {why}" for (h, p), (_, why) in zip(brokers, results, strict=True) if why
        ]
        if broken:
            raise KafkaUnavailable(
                f"cannot connect to the Kafka brokers that {host}:{port} advertises ({how}): "
                + "; ".join(broken)
            )
        return
    raise KafkaUnavailable(f"cannot connect to Kafka ({how}): " + "; ".join(failures))


async def _check(
    host: str, port: int, options: dict[str, Any], kafka: KafkaConfig
) -> tuple[list[tuple[str, int]], str | None]:
    """Connect, log in and ask for the cluster's brokers: (their addresses, None) or ([], why)."""
    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=PROBE_TIMEOUT_SECONDS * 1000, **options),
            PROBE_TIMEOUT_SECONDS,
        )
    except Exception as exc:  # every reason is reported, none is swallowed
        return [], explain(exc, kafka)
    try:
        metadata = await asyncio.wait_for(conn.send(MetadataRequest([])), PROBE_TIMEOUT_SECONDS)
    except Exception as exc:
        return [], explain(exc, kafka)
    finally:
        conn.close()
    if not metadata.brokers:
        # A broker always lists itself. None at all is the error response Kafka sends before
        # closing a connection whose login failed; aiokafka 0.14 misses that for OAUTHBEARER,
        # as it ignores the broker's RFC 7628 error challenge.
        return [], _NOT_AUTHENTICATED.get(kafka.sasl_mechanism or "", _NOT_AUTHENTICATED[""])
    return sorted({(b[1], b[2]) for b in metadata.brokers}), None


_NOT_AUTHENTICATED = {
    "OAUTHBEARER": "authentication failed (the broker rejected the token; its log says why)",
    "": "the broker described an empty cluster (it did not accept the login?)",
}


def _how(kafka: KafkaConfig) -> str:
    if kafka.sasl_mechanism is None or not kafka.security_protocol.startswith("SASL_"):
        return kafka.security_protocol
    user = f" as {kafka.sasl_username!r}" if kafka.sasl_username else ""
    return f"{kafka.security_protocol}, {kafka.sasl_mechanism}{user}"


def explain(exc: BaseException, kafka: KafkaConfig) -> str:
    """Why a connection failed, in words an operator can act on; never a credential."""
    if isinstance(exc, errors.SaslAuthenticationFailed):
        said = exc.args[0] if exc.args else ""
        return f"authentication failed{f' ({said})' if said else ''}"
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"the listener does not offer SASL mechanism {kafka.sasl_mechanism}"
    if isinstance(exc, errors.IllegalSaslStateError):
        return "the listener does not expect SASL (check kafka.security_protocol)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the broker's TLS certificate was rejected: {exc.verify_message} "
            "(check kafka.tls.ca_bundle)"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    if isinstance(exc, errors.KafkaConnectionError | ConnectionResetError):
        return (
            "the broker closed the connection (does the listener expect "
            f"security_protocol {kafka.security_protocol}? a client certificate?)"
        )
    if isinstance(exc, OSError):  # refused, unreachable, unknown host, unreadable token file
        # asyncio words a refusal "Connect call failed (...)"; errno says "Connection refused".
        # A DNS failure (gaierror) has a negative errno and its own words.
        why = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
        return f"{why}: {exc.filename}" if exc.filename else why
    return f"{type(exc).__name__}: {exc}"
