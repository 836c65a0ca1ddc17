"""The one place that picks the attribute store from `attributes.backend`."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from consumer.attributes.store import AttributeStore, FollowedStore
from consumer.attributes.urls import sqlite_path

if TYPE_CHECKING:
    from consumer.attributes.cache import CachedAttributeStore
    from consumer.catalog import Catalog
    from consumer.config import AttributesConfig
    from consumer.observer import Observer
    from consumer.redis_health import RedisHealth


class SentAttributes:
    """The attribute names some channel sends, kept current across reloads (`use` is what
    the reloader calls): what a lookup needs to fetch."""

    def __init__(self, catalog: Catalog) -> None:
        self._names: frozenset[str] = frozenset()
        self.use(catalog)

    def use(self, catalog: Catalog) -> None:
        self._names = frozenset(
            name for channel in catalog.channels.values() for name in channel.user_attributes
        )

    def __call__(self) -> frozenset[str]:
        return self._names


def open_store(
    config: AttributesConfig,
    environ: Mapping[str, str] | None = None,
    redis_health: RedisHealth | None = None,
    *,
    fields: Callable[[], Collection[str]] | None = None,
    observer: Observer | None = None,
) -> AttributeStore:
    """The configured backend, behind the cache unless `cache_ttl_seconds` is 0."""
    backend = open_backend(config, environ, redis_health, fields=fields, observer=observer)
    return cache_for(backend, config) or backend


def open_backend(
    config: AttributesConfig,
    environ: Mapping[str, str] | None = None,
    redis_health: RedisHealth | None = None,
    *,
    fields: Callable[[], Collection[str]] | None = None,
    observer: Observer | None = None,
) -> FollowedStore:
    """The configured backend itself, which the attributes follower writes to.

    `environ` (default: the process's) holds `password_env`. Nothing connects yet: a store
    that is down fails the first lookup, not the start. A Redis store tells `redis_health`
    whether each round trip was answered, fetches only the attributes `fields` names (every
    one without it), and tells `observer` of users it cannot read.
    """
    if config.backend == "sqlite":
        from consumer.attributes.sqlite import SqliteAttributeStore  # imported when chosen

        return SqliteAttributeStore(sqlite_path(config.url), timeout_seconds=config.timeout_seconds)
    if config.backend == "redis":
        # Never loaded for SQLite.
        from consumer.attributes.redis_followed import FollowedRedisStore
        from consumer.secrets import read_secret

        env = os.environ if environ is None else environ
        return FollowedRedisStore(
            config.url,
            key_prefix=config.key_prefix,
            timeout_seconds=config.timeout_seconds,
            password=read_secret(config.password_env, config.password_file, env) or None,
            ca_bundle=config.ca_bundle,
            health=redis_health,
            fields=fields,
            observer=observer,
        )
    raise ValueError(f"unknown attribute store backend {config.backend!r}")


def cache_for(backend: AttributeStore, config: AttributesConfig) -> CachedAttributeStore | None:
    """The cache in front of `backend`; None when `cache_ttl_seconds` is 0."""
    if config.cache_ttl_seconds == 0:
        return None
    from consumer.attributes.cache import CachedAttributeStore  # only when a cache is wanted

    return CachedAttributeStore(
        backend,
        ttl_seconds=config.cache_ttl_seconds,
        max_users=config.cache_max_users,
        max_bytes=config.cache_max_bytes,
    )
