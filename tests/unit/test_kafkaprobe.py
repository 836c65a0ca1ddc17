"""The start-up probe turns connection failures into one line an operator can act on."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import aiokafka.errors as errors
import pytest
from structlog.testing import capture_logs

from consumer import kafkaprobe
from consumer.config import KafkaConfig
from consumer.kafkaprobe import KafkaUnavailable, explain, probe, wait_until_reachable, waitable

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


@pytest.mark.parametrize(
    ("exc", "cured_by_time"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),  # not listening yet
        (OSError(113, "No route to host"), True),
        (socket.gaierror(-2, "Name or service not known"), True),  # a pod's DNS name, not yet
        (TimeoutError(), True),
        (errors.SaslAuthenticationFailed("invalid credentials"), False),
        (errors.UnsupportedSaslMechanismError(), False),
        (errors.IllegalSaslStateError(), False),
        (_verify_error(), False),  # an OSError too, yet a configuration to fix
        (ssl.SSLError(1, "wrong version number"), False),
        (errors.KafkaConnectionError("closed"), False),  # a protocol mismatch
        (ConnectionResetError(104, "reset"), False),
        (FileNotFoundError(2, "No such file or directory", "/var/run/token"), False),
    ],
)
def test_only_what_time_can_cure_is_waited_for(exc: BaseException, cured_by_time: bool) -> None:
    assert waitable(exc) is cured_by_time


class Outage:
    """`probe` failing `failures` times (as `waitable` says), then passing."""

    def __init__(self, failures: int, waitable: bool = True) -> None:
        self.failures, self.waitable, self.calls = failures, waitable, 0

    async def __call__(self, kafka: KafkaConfig, environ: Any = None) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaUnavailable(
                "cannot connect to Kafka (PLAINTEXT): 127.0.0.1:1: Connection refused",
                waitable=self.waitable,
            )


@pytest.fixture
def quick_retries(monkeypatch: Any) -> None:
    monkeypatch.setattr("consumer.kafkaprobe.FIRST_RETRY_SECONDS", 0.01)
    monkeypatch.setattr("consumer.kafkaprobe.LAST_RETRY_SECONDS", 0.02)


async def test_an_unreachable_cluster_is_waited_for_with_one_line(
    monkeypatch: Any, quick_retries: None
) -> None:
    outage = Outage(failures=5)
    monkeypatch.setattr("consumer.kafkaprobe.probe", outage)
    heard: list[str] = []
    with capture_logs() as logs:
        assert await wait_until_reachable(KafkaConfig(), on_waiting=heard.append)
    assert outage.calls == 6
    assert heard == ["cannot connect to Kafka (PLAINTEXT): 127.0.0.1:1: Connection refused"]
    assert [line["event"] for line in logs] == ["kafka.unreachable", "kafka.recovered"]
    assert logs[0]["waiting_up_to_seconds"] == 300
    assert logs[0]["error"] == heard[0]


async def test_what_waiting_cannot_cure_fails_at_once(
    monkeypatch: Any, quick_retries: None
) -> None:
    outage = Outage(failures=5, waitable=False)
    monkeypatch.setattr("consumer.kafkaprobe.probe", outage)
    with capture_logs() as logs, pytest.raises(KafkaUnavailable, match=r"Connection refused$"):
        await wait_until_reachable(KafkaConfig())
    assert outage.calls == 1
    assert logs == []


async def test_the_wait_ends_at_the_startup_timeout(monkeypatch: Any, quick_retries: None) -> None:
    monkeypatch.setattr("consumer.kafkaprobe.probe", Outage(failures=10**9))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(KafkaUnavailable, match=r"Connection refused \(waited 0 s\)$"):
        await wait_until_reachable(KafkaConfig(startup_timeout_seconds=0.3))
    assert 0.3 <= loop.time() - started < 5


async def test_a_zero_timeout_fails_at_once(monkeypatch: Any) -> None:
    outage = Outage(failures=1)
    monkeypatch.setattr("consumer.kafkaprobe.probe", outage)
    with pytest.raises(KafkaUnavailable, match=r"Connection refused$"):
        await wait_until_reachable(KafkaConfig(startup_timeout_seconds=0))
    assert outage.calls == 1


async def test_a_stop_during_the_wait_ends_it(monkeypatch: Any) -> None:
    monkeypatch.setattr("consumer.kafkaprobe.probe", Outage(failures=10**9))
    stop = asyncio.Event()
    waiting = asyncio.create_task(wait_until_reachable(KafkaConfig(), stop=stop))
    await asyncio.sleep(0)  # let it make its first try
    stop.set()
    assert await asyncio.wait_for(waiting, 5) is False


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


def _cluster(answers: dict[int, BaseException | None]) -> Any:
    """A fake `_check`: the bootstrap (port 9092) advertises ports 1, 2 and 3; each answers
    or fails as `answers` says."""

    async def check(host: str, port: int, options: Any, kafka: KafkaConfig) -> Any:
        if port == 9092:
            return [("b", 1), ("b", 2), ("b", 3)], None
        exc = answers[port]
        return ([], None) if exc is None else ([], kafkaprobe._Failure.of(exc, kafka))

    return check


async def test_one_broker_down_of_three_does_not_stop_the_start(monkeypatch: Any) -> None:
    refused = ConnectionRefusedError(111, "Connect call failed")
    monkeypatch.setattr("consumer.kafkaprobe._check", _cluster({1: None, 2: refused, 3: None}))
    with capture_logs() as logs:
        await probe(KafkaConfig(bootstrap_servers="a:9092"))
    assert [(line["event"], line["answering"]) for line in logs] == [
        ("kafka.brokers_unreachable", 2)
    ]


async def test_every_advertised_broker_down_is_waited_for(monkeypatch: Any) -> None:
    refused = ConnectionRefusedError(111, "Connect call failed")
    monkeypatch.setattr(
        "consumer.kafkaprobe._check", _cluster({1: refused, 2: refused, 3: refused})
    )
    with pytest.raises(KafkaUnavailable, match="that a:9092 advertises") as caught:
        await probe(KafkaConfig(bootstrap_servers="a:9092"))
    assert caught.value.waitable


async def test_a_login_refused_by_one_broker_fails_however_many_answer(monkeypatch: Any) -> None:
    failed = errors.SaslAuthenticationFailed("invalid credentials")
    monkeypatch.setattr("consumer.kafkaprobe._check", _cluster({1: None, 2: failed, 3: None}))
    with pytest.raises(KafkaUnavailable, match="b:2: authentication failed") as caught:
        await probe(KafkaConfig(bootstrap_servers="a:9092"))
    assert not caught.value.waitable
