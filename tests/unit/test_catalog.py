"""The runtime view of the config: URLs, secrets and template parameters per channel."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

from consumer.secrets import EMPTY_SECRET

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory


def test_query_is_added_to_the_url(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    _, catalog = build_catalog(
        [channel_cfg(url="https://coupons.example.com/hooks/gio?v=2", query={"source": "gio"})]
    )
    url = catalog.channels["coupon-system"].url
    assert (url.host, url.path) == ("coupons.example.com", "/hooks/gio")
    assert dict(url.query) == {"v": "2", "source": "gio"}


def test_secret_from_env_and_basic_auth_header(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    env = {"HOOK_SECRET": "k", "HOOK_PASSWORD": "p:w"}
    auth = {"username": "gio", "password_env": "HOOK_PASSWORD"}
    _, catalog = build_catalog([channel_cfg(basic_auth=auth)], environ=env)
    channel = catalog.channels["coupon-system"]
    assert channel.secret.reveal() == "k"
    assert channel.authorization is not None
    assert channel.authorization.reveal() == "Basic " + base64.b64encode(b"gio:p:w").decode()


def test_secret_file_loses_its_trailing_newline(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, tmp_path: Path
) -> None:
    file = tmp_path / "secret"
    file.write_text("from-a-file\n", encoding="utf-8")
    _, catalog = build_catalog([channel_cfg(secret_env=None, secret_file=str(file))])
    assert catalog.channels["coupon-system"].secret.reveal() == "from-a-file"


def test_no_secret_configured_is_empty(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    _, catalog = build_catalog([channel_cfg(secret_env=None)])
    assert catalog.channels["coupon-system"].secret == EMPTY_SECRET


def test_routes_carry_only_the_channel_keys_in_channel_order(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    channels = [
        channel_cfg("a", template_params={"quota": "integer", "discount": "string"}),
        channel_cfg("b", template_params={}),
    ]
    params = {"discount": "20%", "quota": 3}  # b declares none of them
    campaign = {"id": "double11", "channels": ["a", "b"], "template_params": params}
    _, catalog = build_catalog(channels, [campaign])
    first, second = catalog.routes["double11"]
    assert (first.channel.name, list(first.template_param.items())) == (
        "a",
        [("quota", 3), ("discount", "20%")],
    )
    assert (second.channel.name, dict(second.template_param)) == ("b", {})


def test_batch_settings(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> None:
    channels = [channel_cfg("one"), channel_cfg("many", batch={"max_users": 5, "linger_ms": 250})]
    _, catalog = build_catalog(channels)
    assert not catalog.channels["one"].batched
    many = catalog.channels["many"]
    assert (many.batched, many.batch_max_users, many.batch_linger_seconds) == (True, 5, 0.25)
