"""The service on a secured cluster: SASL_SSL with SCRAM, OAUTHBEARER, mutual TLS.

A private broker (see secured_kafka.py) offers the secured listeners; the tests' own producing
and reading go through its PLAINTEXT listener, the service and the CLI only through the
secured ones. A wrong password or an untrusted certificate ends `run` with one line, exit 1.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumer.config import KafkaConfig, parse_config
from consumer.delivery import delivery_id
from consumer.kafkaprobe import KafkaUnavailable, probe
from consumer.kafkatools import client_options, stop_consumer
from consumer.receiver import Receiver
from consumer.topics import ensure_topics
from tests.support.polling import until

from .secured_kafka import SCRAM_USER, SecuredKafka
from .support import (
    Setup,
    StartService,
    channel,
    committed_to_end,
    create_topic,
    encoded,
    event,
    produce,
    read_all,
    write_config,
)

# A failing start must end well within this; probes give up after 20 s. These configs keep the
# default kafka.startup_timeout_seconds (300): what waiting cannot cure is not waited for.
CLI_BOUND_SECONDS = 30


def scram(broker: SecuredKafka, mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
    return {
        "bootstrap_servers": broker.sasl_ssl,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_username": SCRAM_USER,
        "sasl_password_env": "KAFKA_PASSWORD",
        "tls": {"ca_bundle": str(broker.ca)},
    }


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *args,
        env={**os.environ, **env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), CLI_BOUND_SECONDS)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode(), time.monotonic() - started


async def test_the_service_delivers_retries_and_dead_letters_over_sasl_ssl(
    secured_kafka: SecuredKafka,
    receiver: Receiver,
    tmp_path: Path,
    running_service: StartService,
) -> None:
    password = secured_kafka.scram_passwords["SCRAM-SHA-512"]
    setup = Setup(
        secured_kafka.plaintext,
        receiver,
        [channel(receiver, name) for name in ("ok", "flaky", "dead")],
        {"c": ["ok", "flaky", "dead"]},
        kafka=scram(secured_kafka),
        retry={
            "quick_attempts": 2,
            "schedule_seconds": [1],
            "circuit_breaker": {"failures": 1000, "cooldown_seconds": 1},
        },
        env={"KAFKA_PASSWORD": password},
        tmp=str(tmp_path),
    )
    config_file = write_config(setup, tmp_path)
    receiver.answer("flaky", statuses=[503] * 10)  # both quick attempts of all 5 fail
    receiver.answer("dead", default=500)
    await create_topic(secured_kafka.plaintext, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(5)]
    await produce(secured_kafka.plaintext, setup.topic, encoded(events))

    service = running_service(setup.config(), setup.environ)
    try:
        assert await receiver.wait_for(
            lambda r: (
                {x.channel for x in r.delivered()} == {"ok", "flaky"}
                and len(r.delivered()) == 10
                and len([x for x in r.received if x.channel == "dead"]) == 15
            ),
            within=30,
        ), receiver.received
        assert await committed_to_end(setup)
        letters = await _eventually_read(secured_kafka.plaintext, setup.dead_letter_topic, 5)
        code, out, err, _ = await _cli(
            "dlq", "stats", "--config", str(config_file), env=setup.environ
        )
    finally:
        await service.shutdown()
    ids = {name: {delivery_id(name, [e["event_id"]]) for e in events} for name in ("ok", "flaky")}
    delivered = receiver.delivered()
    assert len(delivered) == 10, "each (event, channel) pair once"
    assert {r.delivery_id for r in delivered if r.channel == "ok"} == ids["ok"]
    assert {r.attempt for r in delivered if r.channel == "ok"} == {1}
    assert {r.delivery_id for r in delivered if r.channel == "flaky"} == ids["flaky"]
    assert {r.attempt for r in delivered if r.channel == "flaky"} == {3}, "via the delay topic"
    assert len(letters) == 5
    assert code == 0, out + err
    assert re.search(r"│ dead\s+│ http_status\s+│\s+5 │", out), out
    assert password not in out + err


async def _eventually_read(bootstrap: str, topic: str, count: int) -> list[Any]:
    """What `topic` holds once it holds `count` records, or after 20 s."""
    records: list[Any] = []

    async def enough() -> bool:
        records[:] = await read_all(bootstrap, topic)
        return len(records) >= count

    await until(enough, 20, every=0.2)
    return records


async def test_a_wrong_password_ends_run_with_one_line_and_exit_1(
    secured_kafka: SecuredKafka, receiver: Receiver, tmp_path: Path
) -> None:
    wrong = "not-the-Pa55word"
    setup = Setup(
        secured_kafka.plaintext,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        kafka=scram(secured_kafka),
        env={"KAFKA_PASSWORD": wrong},
        tmp=str(tmp_path),
    )
    code, out, err, took = await _cli(
        "run", "--config", str(write_config(setup, tmp_path)), env=setup.environ
    )
    assert code == 1
    assert err.splitlines() == [
        "webhook-consumer: KafkaUnavailable: cannot connect to Kafka (SASL_SSL, SCRAM-SHA-512 as "
        f"'{SCRAM_USER}'): {secured_kafka.sasl_ssl}: authentication failed (Authentication "
        "failed during authentication due to invalid credentials with SASL mechanism "
        "SCRAM-SHA-512)"
    ], err
    assert wrong not in out + err
    assert took < CLI_BOUND_SECONDS


async def test_an_untrusted_broker_certificate_ends_run_with_one_line_and_exit_1(
    secured_kafka: SecuredKafka, receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(
        secured_kafka.plaintext,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        kafka={**scram(secured_kafka), "tls": {"ca_bundle": str(secured_kafka.other_ca)}},
        env={"KAFKA_PASSWORD": secured_kafka.scram_passwords["SCRAM-SHA-512"]},
        tmp=str(tmp_path),
    )
    code, _, err, took = await _cli(
        "run", "--config", str(write_config(setup, tmp_path)), env=setup.environ
    )
    assert code == 1
    assert err.splitlines() == [
        "webhook-consumer: KafkaUnavailable: cannot connect to Kafka (SASL_SSL, SCRAM-SHA-512 as "
        f"'{SCRAM_USER}'): {secured_kafka.sasl_ssl}: the broker's TLS certificate was rejected: "
        "unable to get local issuer certificate (check kafka.tls.ca_bundle)"
    ], err
    assert took < CLI_BOUND_SECONDS


def _kafka(fields: dict[str, Any], environ: dict[str, str]) -> KafkaConfig:
    data = {
        "kafka": fields,
        "allowed_networks": ["127.0.0.0/8"],
        "channels": [{"name": "a", "url": "http://127.0.0.1:9/"}],
    }
    return parse_config(data, "test.yaml", environ).kafka


@pytest.mark.parametrize("how", ["SCRAM-SHA-256", "OAUTHBEARER", "mutual TLS"])
async def test_every_client_kind_works_with_each_mechanism(
    secured_kafka: SecuredKafka, tmp_path: Path, how: str
) -> None:
    environ: dict[str, str] = {}
    if how == "SCRAM-SHA-256":
        environ["KAFKA_PASSWORD"] = secured_kafka.scram_passwords[how]
        fields = scram(secured_kafka, how)
    elif how == "OAUTHBEARER":
        token = tmp_path / "token"
        token.write_text(secured_kafka.token())
        fields = {
            "bootstrap_servers": secured_kafka.sasl_ssl,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_oauth_token_file": str(token),
            "tls": {"ca_bundle": str(secured_kafka.ca)},
        }
    else:
        fields = {
            "bootstrap_servers": secured_kafka.mtls,
            "security_protocol": "SSL",
            "tls": {
                "ca_bundle": str(secured_kafka.ca),
                "client_cert": str(secured_kafka.client_cert),
                "client_key": str(secured_kafka.client_key),
                "client_key_password_file": str(secured_kafka.key_password_file),
            },
        }
    topic = f"secured-{how.replace(' ', '-')}-{time.time_ns()}"
    kafka = _kafka({**fields, "topic": topic, "dead_letter_topic": f"{topic}-dlq"}, environ)
    await probe(kafka, environ)
    await ensure_topics(kafka, environ=environ)  # the admin client
    producer = AIOKafkaProducer(**client_options(kafka, environ), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over " + how.encode(), key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, **client_options(kafka, environ), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await stop_consumer(consumer)
    assert record.value == b"over " + how.encode()


async def test_an_expired_token_fails_and_a_rotated_one_is_used_at_the_next_login(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(secured_kafka.token(lifetime=-60))
    kafka = _kafka(
        {
            "bootstrap_servers": secured_kafka.sasl_ssl,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_oauth_token_file": str(token),
            "tls": {"ca_bundle": str(secured_kafka.ca)},
        },
        {},
    )
    with pytest.raises(KafkaUnavailable) as caught:
        await probe(kafka)
    assert str(caught.value) == (
        f"cannot connect to Kafka (SASL_SSL, OAUTHBEARER): {secured_kafka.sasl_ssl}: "
        "authentication failed (the broker rejected the token; its log says why)"
    )
    token.write_text(secured_kafka.token())  # the same config, a fresh token in the file
    await probe(kafka)


async def test_mutual_tls_without_a_client_certificate_is_refused_clearly(
    secured_kafka: SecuredKafka,
) -> None:
    kafka = _kafka(
        {
            "bootstrap_servers": secured_kafka.mtls,
            "security_protocol": "SSL",
            "tls": {"ca_bundle": str(secured_kafka.ca)},
        },
        {},
    )
    with pytest.raises(KafkaUnavailable) as caught:
        await probe(kafka)
    assert str(caught.value) == (
        f"cannot connect to Kafka (SSL): {secured_kafka.mtls}: the broker closed the connection "
        "(does the listener expect security_protocol SSL? a client certificate?)"
    )
    assert not caught.value.waitable


async def test_a_protocol_mismatch_ends_run_at_once_despite_the_startup_wait(
    secured_kafka: SecuredKafka, receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(
        secured_kafka.mtls,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        kafka={"security_protocol": "SSL", "tls": {"ca_bundle": str(secured_kafka.ca)}},
        tmp=str(tmp_path),
    )
    code, _, err, took = await _cli(
        "run", "--config", str(write_config(setup, tmp_path)), env=setup.environ
    )
    assert code == 1
    assert err.splitlines() == [
        f"webhook-consumer: KafkaUnavailable: cannot connect to Kafka (SSL): {secured_kafka.mtls}: "
        "the broker closed the connection (does the listener expect security_protocol SSL? a "
        "client certificate?)"
    ], err
    assert took < CLI_BOUND_SECONDS
