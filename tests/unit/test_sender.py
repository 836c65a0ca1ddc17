"""One real HTTP attempt against a loopback aiohttp server: headers, signature, outcomes."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from consumer import __version__
from consumer.catalog import Channel
from consumer.delivery import Delivery, delivery_id
from consumer.outcome import Kind
from consumer.secrets import Secret
from consumer.sender import Sender
from consumer.signing import verify
from consumer.tracecontext import TraceContext
from tests.transports import open_client

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory

SECRET = "s3cr3t-示例"
PASSWORD = "pa55-w0rd"
ENV = {"HOOK_SECRET": SECRET, "HOOK_PASSWORD": PASSWORD}


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class Server:
    base: str
    seen: list[Seen] = field(default_factory=list)
    responses: dict[str, web.Response] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(base="")

    async def handle(request: web.Request) -> web.StreamResponse:
        state.seen.append(
            Seen(request.path, dict(request.query), request.headers, await request.read())
        )
        if request.path == "/hang":
            await state.release.wait()
        return state.responses.get(request.path) or web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    state.release.set()
    await runner.cleanup()


@pytest.fixture
async def sender(client: str) -> AsyncIterator[Sender]:
    transport = open_client(client)
    yield Sender(transport)
    await transport.close()


@pytest.fixture
def channel_at(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Any:
    def make(url: str, **fields: Any) -> Channel:
        _, catalog = build_catalog([channel_cfg("coupon-system", url=url, **fields)], environ=ENV)
        return catalog.channels["coupon-system"]

    return make


def make_delivery(channel: Channel, attempts: int = 1) -> Delivery:
    return Delivery(
        id=delivery_id(channel.name, ["e1"]),
        channel=channel,
        campaign_id="double11",
        template_param={"campaignType": "双十一", "discount": "20%"},
        user_attr=[{"hobby": "game1"}],
        events=[],
        sources=[],
        attempts=attempts,
    )


async def test_signed_request_with_contract_headers(
    server: Server, sender: Sender, channel_at: Any
) -> None:
    channel = channel_at(
        f"{server.base}/hooks/gio?fixed=1",
        query={"source": "gio"},
        basic_auth={"username": "gio", "password_env": "HOOK_PASSWORD"},
    )
    delivery = make_delivery(channel, attempts=2)
    before = time.time_ns() // 1_000_000
    outcome = await sender.send(delivery)
    assert outcome.ok, outcome

    (seen,) = server.seen
    assert seen.path == "/hooks/gio"
    assert seen.query == {"fixed": "1", "source": "gio"}
    assert seen.headers["Content-Type"] == "application/json"
    assert verify(seen.body, seen.headers["X-gio-signature"], SECRET)
    assert seen.headers["X-gio-signature"] == seen.headers["X-gio-signature"].lower()
    assert seen.headers["X-gio-delivery-id"] == delivery.id
    assert seen.headers["X-gio-attempt"] == "2"
    assert seen.headers["User-Agent"] == f"webhook-consumer/{__version__}"
    token = base64.b64encode(f"gio:{PASSWORD}".encode()).decode()
    assert seen.headers["Authorization"] == f"Basic {token}"

    body = json.loads(seen.body)
    assert body["name"] == "coupon-system"
    assert body["templateParam"] == {"campaignType": "双十一", "discount": "20%"}
    assert body["userAttr"] == [{"hobby": "game1"}]
    assert before <= int(body["timestamp"]) <= time.time_ns() // 1_000_000
    assert "双十一".encode() in seen.body  # raw UTF-8 on the wire


async def test_no_secret_signs_with_empty_key_and_no_auth_header(
    server: Server, sender: Sender, channel_at: Any
) -> None:
    channel = channel_at(f"{server.base}/hooks/plain", secret_env=None)
    assert (await sender.send(make_delivery(channel))).ok
    (seen,) = server.seen
    assert verify(seen.body, seen.headers["X-gio-signature"], "")
    assert "Authorization" not in seen.headers


async def test_redirect_is_not_followed_and_is_permanent(
    server: Server, sender: Sender, channel_at: Any
) -> None:
    server.responses["/hooks/moved"] = web.Response(
        status=302, headers={"Location": f"{server.base}/elsewhere"}
    )
    outcome = await sender.send(make_delivery(channel_at(f"{server.base}/hooks/moved")))
    assert (outcome.kind, outcome.status, outcome.retryable) == (Kind.HTTP_STATUS, 302, False)
    assert [s.path for s in server.seen] == ["/hooks/moved"]


async def test_server_error_is_retryable_with_retry_after(
    server: Server, sender: Sender, channel_at: Any
) -> None:
    server.responses["/hooks/busy"] = web.Response(
        status=503, text="later", headers={"Retry-After": "7"}
    )
    outcome = await sender.send(make_delivery(channel_at(f"{server.base}/hooks/busy")))
    assert (outcome.status, outcome.retryable, outcome.retry_after) == (503, True, 7.0)
    assert outcome.message == "later"


async def test_no_answer_is_a_timeout_within_the_channel_timeout(
    server: Server, sender: Sender, channel_at: Any
) -> None:
    channel = channel_at(f"{server.base}/hang", timeout_seconds=0.3)
    started = time.monotonic()
    outcome = await sender.send(make_delivery(channel))
    assert time.monotonic() - started < 2.0
    assert (outcome.kind, outcome.retryable) == (Kind.TIMEOUT, True)


async def test_closed_port_is_a_connection_error(sender: Sender, channel_at: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await sender.send(make_delivery(channel_at(f"http://127.0.0.1:{port}/hooks")))
    assert (outcome.kind, outcome.retryable) == (Kind.CONNECTION, True)


async def test_odd_retry_after_still_yields_an_outcome(
    server: Server, sender: Sender, channel_at: Any
) -> None:
    server.responses["/hooks/odd"] = web.Response(status=503, headers={"Retry-After": "²"})
    outcome = await sender.send(make_delivery(channel_at(f"{server.base}/hooks/odd")))
    assert (outcome.status, outcome.retryable) == (503, True)


async def test_destination_outside_allowed_networks_is_refused(
    server: Server, channel_cfg: ChannelFactory, build_catalog: CatalogFactory, client: str
) -> None:
    # A name, not the literal 127.0.0.1 (which check-config refuses already): the guard
    # judges what localhost resolves to, at send time.
    base = server.base.replace("127.0.0.1", "localhost")
    config, catalog = build_catalog(
        [channel_cfg("internal", url=f"{base}/hooks")],
        environ=ENV,
        allowed_networks=["10.0.0.0/8"],
    )
    transport = open_client(client, [str(n) for n in config.allowed_networks])
    try:
        outcome = await Sender(transport).send(make_delivery(catalog.channels["internal"]))
    finally:
        await transport.close()
    assert server.seen == []
    assert outcome.kind is Kind.BLOCKED_DESTINATION
    assert not outcome.retryable
    assert "blocked" in outcome.message


def test_secret_never_shows_itself() -> None:
    secret = Secret("hunter2")
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>30}"):
        assert "hunter2" not in shown
    assert secret.reveal() == "hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_channel_and_catalog_repr_hide_secrets(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    _, catalog = build_catalog(
        [
            channel_cfg(
                "coupon-system", basic_auth={"username": "gio", "password_env": "HOOK_PASSWORD"}
            )
        ],
        environ=ENV,
    )
    token = base64.b64encode(f"gio:{PASSWORD}".encode()).decode()
    for shown in (repr(catalog.channels["coupon-system"]), repr(catalog)):
        assert SECRET not in shown
        assert PASSWORD not in shown
        assert token not in shown


async def test_a_traced_delivery_continues_its_trace_with_a_new_span_per_attempt(
    channel_cfg: Any, build_catalog: Any, bare_delivery: Any, sender: Sender
) -> None:
    _, catalog = build_catalog([channel_cfg()])
    delivery = bare_delivery(catalog.channels["coupon-system"])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    delivery.trace = TraceContext(trace_id, "00f067aa0ba902b7", "01", "congo=t61rcWkgMzE")
    spans = []
    for _ in range(2):
        _, headers = sender.prepare(delivery)
        version, trace, span, flags = headers["traceparent"].split("-")
        assert (version, trace, flags) == ("00", trace_id, "01")
        assert span == delivery.span_id
        assert span != "00f067aa0ba902b7"
        assert headers["tracestate"] == "congo=t61rcWkgMzE"
        spans.append(span)
    assert spans[0] != spans[1]
    delivery.trace = None
    _, headers = sender.prepare(delivery)
    assert "traceparent" not in headers
    assert "tracestate" not in headers
