"""Hostile-world guarantees through the real service on a real broker: no secret in any log
line, dead letter, retry record or send-test output; blocked destinations; Standard Webhooks.
Each runs once per HTTP transport (`http.client`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import json
import socket
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import structlog
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from consumer.cli import main
from consumer.config import parse_config
from consumer.delivery import delivery_id
from consumer.logs import configure_logging
from consumer.receiver import Receiver
from consumer.secrets import REDACTED

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
)

WHSEC_NEW = "whsec_" + base64.b64encode(b"integration-new-key-0123456789ab").decode()
WHSEC_OLD = "whsec_" + base64.b64encode(b"integration-old-key-0123456789ab").decode()


def _whsec(label: str, suffix: str) -> str:
    return "whsec_" + base64.b64encode(f"{label}-{suffix}-key-0123456789".encode()).decode()


def secret_forms(secrets: Iterable[str]) -> dict[str, str]:
    """Every way a secret could show up in text: as is, JSON-escaped, HTML-escaped, URL-quoted,
    the base64 behind whsec_."""
    forms: dict[str, str] = {}
    for secret in secrets:
        for form in (
            secret,
            json.dumps(secret)[1:-1],
            html.escape(secret, quote=True),
            quote(secret, safe=""),
            secret.removeprefix("whsec_"),
        ):
            forms[form] = secret
    return forms


def planted_in_exposition(secrets: list[str]) -> str:
    """The secrets as label values of a Prometheus text exposition, as /metrics renders one."""
    registry = CollectorRegistry()
    gauge = Gauge("planted", "a positive control", ["value"], registry=registry)
    for secret in secrets:
        gauge.labels(value=secret).set(1)
    return generate_latest(registry).decode()


def leaks(text: str, forms: dict[str, str]) -> set[str]:
    return {secret for form, secret in forms.items() if form in text}


def resolves_to(monkeypatch: pytest.MonkeyPatch, name: str, address: str) -> None:
    """`name` resolves to `address` alone in this process (aiohttp's threaded resolver asks
    socket.getaddrinfo); every other name as usual."""
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, port, *args, **kwargs)
        if ":" in address:
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0))]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)


async def _topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()


async def test_no_secret_reaches_logs_dead_letters_retries_or_send_test(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    client: str,
    running_service: StartService,
) -> None:
    suffix_env = {
        "OK_PASSWORD": "ok-pässwörd-示例-1",
        "STRICT_PASSWORD": "strict-password-2",
        "FLAKY_PASSWORD": "flaky-password-3",
    }
    auth = lambda var: {"username": "gio", "password_env": var}  # noqa: E731
    blocked = channel(receiver, "blocked")
    # A name that resolves outside 127.0.0.0/8 (a literal address is refused by check-config).
    resolves_to(monkeypatch, "blocked.test", "0.0.0.0")
    blocked["url"] = f"http://blocked.test:{receiver.port}/hooks/blocked"
    channels = [
        channel(receiver, "ok", basic_auth=auth("OK_PASSWORD")),
        channel(receiver, "strict", basic_auth=auth("STRICT_PASSWORD")),
        channel(receiver, "flaky", basic_auth=auth("FLAKY_PASSWORD")),
        blocked,
    ]
    setup = Setup(
        bootstrap,
        receiver,
        channels,
        {"c": [ch["name"] for ch in channels]},
        retry={"quick_attempts": 1, "schedule_seconds": [0.3]},
        log_level="debug",
        tmp=tmp,
        http={"client": client},
    )
    whsec = _whsec("ok", setup.suffix)
    channels[0]["standard_webhooks"] = {"secret_env": "OK_WHSEC"}
    environ = {**setup.environ, **suffix_env, "OK_WHSEC": whsec}
    receiver.secrets.update(setup.secrets_by_channel())
    receiver.standard_secrets["ok"] = [whsec]
    receiver.answer("strict", default=400, echo=True)  # echoes our headers into its answer
    receiver.answer("flaky", [503])  # one failure: the delivery travels the retry topic
    config = parse_config(setup.document(), "test-config", environ)

    secrets = [*environ.values()]
    secrets += [base64.b64encode(f"gio:{p}".encode()).decode() for p in suffix_env.values()]
    forms = secret_forms(secrets)
    # The search can fail: planted in a rendered JSON log line, every secret is found.
    planted = structlog.processors.JSONRenderer()(None, "", {"event": "x", "all": secrets})
    assert leaks(str(planted), forms) == set(secrets)
    # ...in a metrics exposition, and in HTML escaped as the status page escapes every value.
    assert leaks(planted_in_exposition(secrets), forms) == set(secrets)
    page = "".join(f"<td>{html.escape(s, quote=True)}</td>" for s in secrets)  # as the page does
    assert leaks(page, forms) == set(secrets)

    admin_pages: dict[str, str] = {}
    # The service's own logging set-up, writing to a buffer until configured again.
    log_out = io.StringIO()
    configure_logging("debug", "json", stream=log_out)
    try:
        events = [event("c", f"u-{i}") for i in range(5)]
        await create_topic(bootstrap, setup.topic, 1)
        await produce(bootstrap, setup.topic, encoded(events))
        service = running_service(config, environ)
        assert await receiver.wait_for(
            lambda r: (
                {x.channel for x in r.delivered()} >= {"ok", "flaky"}
                and sum(x.channel == "flaky" and x.status == 200 for x in r.received) == 5
            ),
            within=60,
        )
        assert await committed_to_end(setup, within=60)
        # What the admin port shows anyone who can reach it, while the service runs.
        admin = await service.admin_url()
        async with aiohttp.ClientSession() as http:
            for path in ("/metrics", "/", "/readyz", "/healthz"):
                async with http.get(f"{admin}{path}") as response:
                    assert response.status == 200, path
                    admin_pages[path] = await response.text()
        assert "webhook_consumer_deliveries_total" in admin_pages["/metrics"]
        assert all(f'data-channel="{ch["name"]}"' in admin_pages["/"] for ch in channels)
        await service.shutdown()

        # send-test, in-process like the command line, against the echoing channel.
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(yaml.safe_dump(setup.document(), allow_unicode=True))
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = await asyncio.to_thread(
                main, ["send-test", "--config", str(config_file), "strict"]
            )
        assert status == 1
        send_test_output = out.getvalue()
    finally:
        configure_logging()  # back to stderr

    # The leak was there to be made: the receiver did echo the Basic token back.
    strict = [r for r in receiver.received if r.channel == "strict"]
    token = base64.b64encode(f"gio:{suffix_env['STRICT_PASSWORD']}".encode()).decode()
    assert strict
    assert all(r.headers["Authorization"] == f"Basic {token}" for r in strict)
    assert "Authorization" in send_test_output

    letters = await read_all(bootstrap, setup.dead_letter_topic)
    kinds = sorted(json.loads(r.value)["reason"]["kind"] for r in letters)
    assert kinds == ["blocked_destination"] * 5 + ["http_status"] * 5
    retried = [
        r
        for topic in await _topics_with_prefix(bootstrap, f"{setup.group}.retry")
        for r in await read_all(bootstrap, topic)
    ]
    assert retried, "the flaky channel's deliveries should have used a retry topic"

    logs = log_out.getvalue() + capsys.readouterr().err + caplog.text
    assert "delivery.gave_up" in logs  # the capture did see the service's log lines
    texts = {
        "logs": logs,
        "send-test": send_test_output,
        **{f"admin {path}": text for path, text in admin_pages.items()},
        **{f"dead letter {i}": f"{r.value!r} {r.headers!r}" for i, r in enumerate(letters)},
        **{f"retry record {i}": f"{r.value!r} {r.headers!r}" for i, r in enumerate(retried)},
    }
    found = {where: leaks(text, forms) for where, text in texts.items()}
    assert {where: s for where, s in found.items() if s} == {}
    assert any(REDACTED in json.loads(r.value)["reason"]["message"] for r in letters)


async def test_a_blocked_destination_is_dead_lettered_without_a_request(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    client: str,
    monkeypatch: pytest.MonkeyPatch,
    running_service: StartService,
) -> None:
    blocked = channel(receiver, "internal")
    # What check-config cannot see: a name whose DNS answer is a refused address (the
    # IPv4-mapped form of 0.0.0.0), judged at send time.
    resolves_to(monkeypatch, "internal.test", "::ffff:0.0.0.0")
    blocked["url"] = f"http://internal.test:{receiver.port}/hooks/internal"
    setup = Setup(
        bootstrap, receiver, [blocked], {"c": ["internal"]}, tmp=tmp, http={"client": client}
    )
    e = event("c", "u-1")
    await create_topic(bootstrap, setup.topic, 1)
    await produce(bootstrap, setup.topic, encoded([e]))
    service = running_service(setup.config(), setup.environ)
    assert await committed_to_end(setup)
    await service.shutdown()
    assert receiver.received == []
    [letter] = await read_all(bootstrap, setup.dead_letter_topic)
    body = json.loads(letter.value)
    assert body["reason"]["kind"] == "blocked_destination"
    assert "blocked" in body["reason"]["message"]
    assert body["attempts"] == 1
    assert body["delivery_id"] == delivery_id("internal", [e["event_id"]])


async def test_standard_webhooks_through_the_service_during_a_rotation(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    client: str,
    running_service: StartService,
) -> None:
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    rotating = {
        "secret_env": "SW_NEW",
        "previous_secret_env": "SW_OLD",
        "previous_valid_until": until,
    }
    channels = [
        # One receiver still on the old secret, one already on the new: both must verify.
        channel(receiver, "still-old", standard_webhooks=rotating),
        channel(receiver, "already-new", standard_webhooks=rotating),
        channel(receiver, "plain"),
    ]
    setup = Setup(bootstrap, receiver, channels, {"c": ["still-old", "already-new", "plain"]})
    setup.tmp = tmp
    setup.http = {"client": client}
    environ = {**setup.environ, "SW_NEW": WHSEC_NEW, "SW_OLD": WHSEC_OLD}
    receiver.secrets.update(setup.secrets_by_channel())
    receiver.standard_secrets.update({"still-old": [WHSEC_OLD], "already-new": [WHSEC_NEW]})
    events = [event("c", f"u-{i}") for i in range(10)]
    await create_topic(bootstrap, setup.topic, 3)
    await produce(bootstrap, setup.topic, encoded(events))
    service = running_service(parse_config(setup.document(), "test", environ), environ)
    assert await receiver.wait_for(lambda r: len(r.delivered()) == 30, within=60)
    await service.shutdown()
    assert all(r.verified for r in receiver.received)
    assert len({(r.channel, r.delivery_id) for r in receiver.received}) == 30  # each once
    assert len(receiver.received) == 30
    by_channel: dict[str, list[Any]] = {}
    for r in receiver.received:
        by_channel.setdefault(r.channel, []).append(r)
    for name in ("still-old", "already-new"):
        assert all(r.standard_verified for r in by_channel[name])
        assert all(r.headers["webhook-id"] == r.delivery_id for r in by_channel[name])
        assert all(len(r.headers["webhook-signature"].split()) == 2 for r in by_channel[name])
    assert all(r.standard_verified is None for r in by_channel["plain"])
