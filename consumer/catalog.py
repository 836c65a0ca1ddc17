"""Runtime view of the config: channels with their secrets resolved, campaigns bound to them."""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from yarl import URL

from .config import ChannelConfig, RateLimitConfig, ServiceConfig, StandardWebhooksConfig
from .secrets import Secret, read_secret, redactions, remember
from .standard_webhooks import SigningKeys


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
    tls: ssl.SSLContext | None = None  # None: verify against the system's CAs
    standard_webhooks: SigningKeys | None = None  # also sign the Standard Webhooks way
    ordering: str = "none"  # "per_user": one user's deliveries one at a time, in input order
    # What a receiver could echo back of this channel's secrets, scrubbed from its answers.
    redactions: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def batched(self) -> bool:
        return self.batch_max_users > 1

    @property
    def per_user(self) -> bool:
        return self.ordering == "per_user"


@dataclass(frozen=True, slots=True)
class Route:
    """One channel of a campaign with the template parameters it receives."""

    channel: Channel
    template_param: Mapping[str, Any]
    expire_after: float | None = None  # seconds: the shorter of the campaign's and channel's


def expire_after(*limits: float | None) -> float | None:
    """The limit in force: the shortest of those set, None when none is."""
    return min((limit for limit in limits if limit is not None), default=None)


@dataclass(frozen=True, slots=True)
class Catalog:
    channels: Mapping[str, Channel]
    routes: Mapping[str, tuple[Route, ...]]  # campaign id -> its channels

    @classmethod
    def from_config(
        cls, config: ServiceConfig, environ: Mapping[str, str] | None = None
    ) -> Catalog:
        env = os.environ if environ is None else environ

        @cache  # one context per CA bundle: loading one is slow, and each has its own pool
        def trusting(bundle: Path) -> ssl.SSLContext:
            return ssl.create_default_context(cafile=str(bundle))

        channels = {
            ch.name: _channel(ch, env, config.tls.ca_bundle, trusting) for ch in config.channels
        }
        limits = {ch.name: ch.expire_after_seconds for ch in config.channels}
        routes = {
            campaign.id: tuple(
                Route(
                    channel=channels[name],
                    # Only the channel's declared keys, in its declared order.
                    template_param={
                        key: campaign.template_params[key] for key in channels[name].template_keys
                    },
                    expire_after=expire_after(campaign.expire_after_seconds, limits[name]),
                )
                for name in campaign.channels
            )
            for campaign in config.campaigns
        }
        return cls(channels=channels, routes=routes)


def _channel(
    config: ChannelConfig,
    env: Mapping[str, str],
    ca_bundle: Path | None,
    contexts: Callable[[Path], ssl.SSLContext],
) -> Channel:
    url = URL(config.url)
    if config.query:
        url = url.update_query({**url.query, **config.query})
    secret = read_secret(config.secret_env, config.secret_file, env)
    secrets: list[Secret | str] = [secret]
    authorization = None
    if config.basic_auth is not None:
        auth = config.basic_auth
        password = read_secret(auth.password_env, auth.password_file, env)
        token = base64.b64encode(f"{auth.username}:{password.reveal()}".encode()).decode("ascii")
        remember(token)  # a receiver echoing the header back must not get it into a log
        authorization = Secret(f"Basic {token}")
        secrets += [password, token, authorization]
    keys = None
    if config.standard_webhooks is not None:
        keys = _signing_keys(config.standard_webhooks, env)
        for key in (keys.current, keys.previous):
            if key is not None:
                secrets += [key, key.reveal().removeprefix("whsec_")]
    bundle = config.tls.ca_bundle or ca_bundle
    return Channel(
        name=config.name,
        url=url,
        secret=secret,
        authorization=authorization,
        template_keys=tuple(config.template_params),
        user_attributes=tuple(config.user_attributes),
        rate_limit=config.rate_limit,
        max_concurrency=config.max_concurrency,
        timeout_seconds=config.timeout_seconds,
        batch_max_users=config.batch.max_users,
        batch_linger_seconds=config.batch.linger_ms / 1000,
        tls=None if bundle is None else contexts(bundle),
        standard_webhooks=keys,
        ordering=config.ordering,
        redactions=redactions(secrets),
    )


def _signing_keys(config: StandardWebhooksConfig, env: Mapping[str, str]) -> SigningKeys:
    previous = None
    if config.previous_secret_env is not None or config.previous_secret_file is not None:
        previous = read_secret(config.previous_secret_env, config.previous_secret_file, env)
    keys = SigningKeys(
        current=read_secret(config.secret_env, config.secret_file, env),
        previous=previous,
        previous_valid_until=config.previous_valid_until,
    )
    for key in (keys.current, previous):
        if key is not None:  # its base64 alone is as secret as the whole whsec_ string
            remember(key.reveal().removeprefix("whsec_"))
    return keys
