"""Runtime view of the config: channels with their secrets resolved, campaigns bound to them."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from .config import ChannelConfig, RateLimitConfig, ServiceConfig
from .secrets import EMPTY_SECRET, Secret


@dataclass(frozen=True, slots=True)
class Channel:
    """One receiver endpoint, ready to send to."""

    name: str
    url: URL
    secret: Secret
    authorization: Secret | None  # the whole `Authorization` header value
    template_keys: tuple[str, ...]
    user_attributes: tuple[str, ...]
    rate_limit: RateLimitConfig | None
    max_concurrency: int
    timeout_seconds: float
    batch_max_users: int
    batch_linger_seconds: float

    @property
    def batched(self) -> bool:
        return self.batch_max_users > 1


@dataclass(frozen=True, slots=True)
class Route:
    """One channel of a campaign with the template parameters it receives."""

    channel: Channel
    template_param: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Catalog:
    channels: Mapping[str, Channel]
    routes: Mapping[str, tuple[Route, ...]]  # campaign id -> its channels

    @classmethod
    def from_config(
        cls, config: ServiceConfig, environ: Mapping[str, str] | None = None
    ) -> Catalog:
        env = os.environ if environ is None else environ
        channels = {ch.name: _channel(ch, env) for ch in config.channels}
        routes = {
            campaign.id: tuple(
                Route(
                    channel=channels[name],
                    # Only the channel's declared keys, in its declared order.
                    template_param={
                        key: campaign.template_params[key] for key in channels[name].template_keys
                    },
                )
                for name in campaign.channels
            )
            for campaign in config.campaigns
        }
        return cls(channels=channels, routes=routes)


def _channel(config: ChannelConfig, env: Mapping[str, str]) -> Channel:
    url = URL(config.url)
    if config.query:
        url = url.update_query({**url.query, **config.query})
    authorization = None
    if config.basic_auth is not None:
        auth = config.basic_auth
        password = _read_secret(auth.password_env, auth.password_file, env)
        token = base64.b64encode(f"{auth.username}:{password.reveal()}".encode()).decode("ascii")
        authorization = Secret(f"Basic {token}")
    return Channel(
        name=config.name,
        url=url,
        secret=_read_secret(config.secret_env, config.secret_file, env),
        authorization=authorization,
        template_keys=tuple(config.template_params),
        user_attributes=tuple(config.user_attributes),
        rate_limit=config.rate_limit,
        max_concurrency=config.max_concurrency,
        timeout_seconds=config.timeout_seconds,
        batch_max_users=config.batch.max_users,
        batch_linger_seconds=config.batch.linger_ms / 1000,
    )


def _read_secret(var: str | None, file: Path | None, env: Mapping[str, str]) -> Secret:
    if var is not None:
        return Secret(env[var])
    if file is not None:
        # A trailing newline is an artefact of how files are written, never part of a key.
        return Secret(file.read_text(encoding="utf-8").rstrip("\r\n"))
    return EMPTY_SECRET
