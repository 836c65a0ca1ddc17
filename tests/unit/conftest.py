"""Shared factories for the unit tests: configs, catalogs, and polling with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest

from consumer.catalog import Catalog
from consumer.config import ServiceConfig, parse_config

SECRET = "s3cr3t-示例"
BASIC_PASSWORD = "pa55-w0rd"
ENV: Mapping[str, str] = {"HOOK_SECRET": SECRET, "HOOK_PASSWORD": BASIC_PASSWORD}

ChannelFactory = Callable[..., dict[str, Any]]
CatalogFactory = Callable[..., tuple[ServiceConfig, Catalog]]
WaitUntil = Callable[..., Awaitable[None]]


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
def wait_until() -> WaitUntil:
    """Poll `predicate` until it holds; fail the test after `within` seconds."""

    async def wait(predicate: Callable[[], bool], within: float = 3.0, what: str = "") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            if loop.time() > deadline:
                pytest.fail(f"not true within {within}s: {what or predicate}")
            await asyncio.sleep(0.002)

    return wait
