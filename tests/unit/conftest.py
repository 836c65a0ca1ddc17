"""Shared factories for the unit tests: configs, catalogs, deliveries, polling with a deadline."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from consumer.attributes import MemoryAttributeStore, SqliteAttributeStore
from consumer.catalog import Catalog, Channel
from consumer.config import ServiceConfig, parse_config
from consumer.delivery import Delivery
from consumer.outcome import Outcome
from consumer.sender import Sender
from tests.support.polling import until
from tests.transports import open_client

SECRET = "s3cr3t-示例"
BASIC_PASSWORD = "pa55-w0rd"
ENV: Mapping[str, str] = {"HOOK_SECRET": SECRET, "HOOK_PASSWORD": BASIC_PASSWORD}

ChannelFactory = Callable[..., dict[str, Any]]
CatalogFactory = Callable[..., tuple[ServiceConfig, Catalog]]
WaitUntil = Callable[..., Awaitable[None]]
DeliveryFactory = Callable[..., Delivery]
SendOnce = Callable[..., Awaitable[Outcome]]
ServeHooks = Callable[..., AbstractAsyncContextManager[web.AppRunner]]


UNIT_TIMEOUT_SECONDS = 30  # no broker, no network beyond loopback: a slower one is stuck


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A unit test without a timeout of its own gets UNIT_TIMEOUT_SECONDS (not the 120 s of
    pyproject.toml, meant for tests that start services)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_SECONDS))


@pytest.fixture
def channel_cfg() -> ChannelFactory:
    """A channel section as it would appear in the YAML; keyword arguments override fields."""

    def make(name: str = "coupon-system", **fields: Any) -> dict[str, Any]:
        return {
            "name": name,
            "url": "http://127.0.0.1:9/hooks",
            "secret_env": "HOOK_SECRET",
            "template_params": {"campaignType": "string", "discount": "string"},
            "user_attributes": ["hobby", "birthday"],
            **fields,
        }

    return make


@pytest.fixture
def build_catalog() -> CatalogFactory:
    """Validate a config made of these sections and resolve it into a Catalog."""

    def build(
        channels: Sequence[dict[str, Any]],
        campaigns: Sequence[dict[str, Any]] = (),
        environ: Mapping[str, str] = ENV,
        **top: Any,
    ) -> tuple[ServiceConfig, Catalog]:
        data = {
            "allowed_networks": ["127.0.0.0/8"],
            "channels": list(channels),
            "campaigns": list(campaigns),
            **top,
        }
        config = parse_config(data, "test", environ)
        return config, Catalog.from_config(config, environ)

    return build


@pytest.fixture
def bare_delivery() -> DeliveryFactory:
    """A first attempt carrying nothing in particular, for tests about how a request is sent."""

    def make(channel: Channel, id: str = "d-1") -> Delivery:
        return Delivery(
            id=id,
            channel=channel,
            campaign_id="c",
            template_param={},
            user_attr=[],
            events=[],
            sources=[],
            attempts=1,
        )

    return make


@pytest.fixture
def send_once(bare_delivery: DeliveryFactory, client: str) -> SendOnce:
    """Send a bare delivery to `channel` through a fresh transport (each of them: the test runs
    once per transport) that allows only `allowed`."""

    async def send(channel: Channel, allowed: Sequence[str] = ("127.0.0.0/8",)) -> Outcome:
        transport = open_client(client, allowed)
        try:
            return await Sender(transport).send(bare_delivery(channel))
        finally:
            await transport.close()

    return send


@pytest.fixture
def serve_hooks() -> ServeHooks:
    """Serve `handle` at POST /hooks on 127.0.0.1, a free port, for the block; more sites may join
    the runner it yields."""

    @asynccontextmanager
    async def serve(
        handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncIterator[web.AppRunner]:
        app = web.Application()
        app.router.add_post("/hooks", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
            yield runner
        finally:
            await runner.cleanup()

    return serve


@pytest.fixture
def wait_until() -> WaitUntil:
    """Poll `predicate` until it holds; fail the test after `within` seconds."""

    async def wait(predicate: Callable[[], bool], within: float = 3.0, what: str = "") -> None:
        if not await until(predicate, within, every=0.002):
            pytest.fail(f"not true within {within}s: {what or predicate}")

    return wait


@pytest.fixture(params=["sqlite", "memory"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqliteAttributeStore | MemoryAttributeStore]:
    """Each local attribute store: both are looked up (AttributeStore) and followed into
    (FollowedStore)."""
    s: SqliteAttributeStore | MemoryAttributeStore
    if request.param == "sqlite":
        s = SqliteAttributeStore(tmp_path / "attrs.db")
    else:
        s = MemoryAttributeStore()
    yield s
    await s.close()
