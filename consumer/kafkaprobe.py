"""One connection to each broker before any client starts, so a wrong password, an untrusted
certificate or a wrong protocol fails the start in one clear line, while a cluster that is not
up yet is waited for (`wait_until_reachable`): a pod scheduled during a broker outage starts when
Kafka is back instead of crash-looping.

aiokafka's clients only log why a connection failed and retry: a bootstrap fails as "Unable to
bootstrap", and a broker that rejects the credentials after the bootstrap is retried forever.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiokafka.errors as errors
import structlog
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.protocol.metadata import MetadataRequest

from .config import KafkaConfig
from .kafkatools import client_options

log = structlog.get_logger(__name__)

PROBE_TIMEOUT_SECONDS = 20.0  # for opening a connection (TCP, TLS, SASL), and for one request
FIRST_RETRY_SECONDS = 0.5  # then doubled per failed try, up to
LAST_RETRY_SECONDS = 5.0  # so Kafka coming back is noticed within about 5 s
REMIND_EVERY_SECONDS = 60.0

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
    """The cluster cannot be used with this configuration; the message says why, in one line.
    `waitable`: every failure was one that time can cure (refused, unreachable, no answer, a
    name not resolving yet); never so for authentication, TLS or a protocol mismatch."""

    def __init__(self, message: str, *, waitable: bool = False) -> None:
        super().__init__(message)
        self.waitable = waitable


async def wait_until_reachable(
    kafka: KafkaConfig,
    environ: Mapping[str, str] | None = None,
    *,
    stop: asyncio.Event | None = None,
    on_waiting: Callable[[str], None] = lambda why: None,
) -> bool:
    """`probe` until it passes (True), retrying waitable failures with back-off for up to
    `kafka.startup_timeout_seconds`; False when `stop` was set meanwhile. Logs one
    `kafka.unreachable` line (a reminder a minute) and `kafka.recovered`; `on_waiting` hears the
    reason at the first failure. Raises KafkaUnavailable at once for what waiting cannot cure,
    and after the timeout for the rest."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + kafka.startup_timeout_seconds
    pause, reminded, down = FIRST_RETRY_SECONDS, started, False
    while True:
        try:
            await probe(kafka, environ)
        except KafkaUnavailable as exc:
            now = loop.time()
            if not exc.waitable or now >= deadline:
                if down:
                    raise KafkaUnavailable(f"{exc} (waited {now - started:.0f} s)") from None
                raise
            if not down:
                down = True
                log.warning(
                    "kafka.unreachable",
                    error=str(exc),
                    phase="start",
                    waiting_up_to_seconds=kafka.startup_timeout_seconds,
                )
                on_waiting(str(exc))
            elif now - reminded >= REMIND_EVERY_SECONDS:
                reminded = now
                log.warning(
                    "kafka.still_unreachable", error=str(exc), down_seconds=round(now - started)
                )
            # Jittered, so replicas started together do not knock in step.
            wait = min(pause * random.uniform(0.5, 1.0), deadline - now)
            pause = min(pause * 2, LAST_RETRY_SECONDS)
            if stop is None:
                await asyncio.sleep(wait)
            elif await _stopped(stop, wait):
                return False
        else:
            if down:
                log.warning(
                    "kafka.recovered", phase="start", down_seconds=round(loop.time() - started, 1)
                )
            return True


async def _stopped(stop: asyncio.Event, within: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), within)
    except TimeoutError:
        return False
    return True


async def probe(kafka: KafkaConfig, environ: Mapping[str, str] | None = None) -> None:
    """Connect to a bootstrap server, then to every broker it advertises, as the clients will;
    raise KafkaUnavailable naming each address that failed and why.

    Some advertised brokers failing in ways time can cure while others answer is no reason to
    stop (the clients ride out one broker down, as a running service does): logged, passed."""
    options = client_options(kafka, environ)
    connect = {k: options[k] for k in _CONNECTION_OPTIONS if k in options}
    how = _how(kafka)
    failures: list[str] = []
    waitable = True
    for host, port, _ in collect_hosts(kafka.bootstrap_servers, randomize=False):
        brokers, failure = await _check(host, port, connect, kafka)
        if failure is not None:
            failures.append(f"{host}:{port}: {failure.why}")
            waitable = waitable and failure.waitable
            continue
        results = await asyncio.gather(*(_check(h, p, connect, kafka) for h, p in brokers))
        broken = [(h, p, f) for (h, p), (_, f) in zip(brokers, results, strict=True) if f]
        said = "; ".join(f"{h}:{p}: {f.why}" for h, p, f in broken)
        if broken and (len(broken) == len(brokers) or not all(f.waitable for *_, f in broken)):
            raise KafkaUnavailable(
                f"cannot connect to the Kafka brokers that {host}:{port} advertises ({how}): "
                + said,
                waitable=all(f.waitable for *_, f in broken),
            )
        if broken:
            log.warning(
                "kafka.brokers_unreachable", error=said, answering=len(brokers) - len(broken)
            )
        return
    raise KafkaUnavailable(
        f"cannot connect to Kafka ({how}): " + "; ".join(failures), waitable=waitable
    )


@dataclass(frozen=True, slots=True)
class _Failure:
    why: str
    waitable: bool

    @classmethod
    def of(cls, exc: BaseException, kafka: KafkaConfig) -> _Failure:
        return cls(explain(exc, kafka), waitable(exc))


async def _check(
    host: str, port: int, options: dict[str, Any], kafka: KafkaConfig
) -> tuple[list[tuple[str, int]], _Failure | None]:
    """Connect, log in and ask for the cluster's brokers: (their addresses, None) or
    ([], what failed)."""
    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, request_timeout_ms=PROBE_TIMEOUT_SECONDS * 1000, **options),
            PROBE_TIMEOUT_SECONDS,
        )
    except Exception as exc:  # every reason is reported, none is swallowed
        return [], _Failure.of(exc, kafka)
    try:
        metadata = await asyncio.wait_for(conn.send(MetadataRequest([])), PROBE_TIMEOUT_SECONDS)
    except Exception as exc:
        return [], _Failure.of(exc, kafka)
    finally:
        conn.close()
    if not metadata.brokers:
        # A broker always lists itself. None at all is the error response Kafka sends before
        # closing a connection whose login failed; aiokafka 0.14 misses that for OAUTHBEARER,
        # as it ignores the broker's RFC 7628 error challenge.
        why = _NOT_AUTHENTICATED.get(kafka.sasl_mechanism or "", _NOT_AUTHENTICATED[""])
        return [], _Failure(why, waitable=False)
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


def waitable(exc: BaseException) -> bool:
    """Whether a broker that failed this way may answer later: nothing listening, no route, no
    answer, a name that does not resolve yet. A TLS failure (an OSError too), a rejected login
    or a connection the broker closed (a protocol mismatch) is a configuration to fix."""
    if isinstance(exc, ssl.SSLError | errors.KafkaConnectionError | ConnectionResetError):
        return False
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError)


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
