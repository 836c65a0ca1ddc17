"""Attribute store interface, its one operational error, in-memory backend and factory."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from consumer.config import AttributesConfig
    from consumer.redis_health import RedisHealth


class AttributesUnavailable(Exception):
    """The store cannot answer now (down, timing out, read-only, locked); worth retrying later.

    Every backend raises this and only this for operational failures, with a message that names
    the store but never a password.
    """


class AttributeStore(Protocol):
    """Per-user attribute lookup used when building webhooks."""

    async def get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """Return attributes for the given users; unknown users are absent."""
        ...

    async def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Upsert users, replacing (not merging) their attributes."""
        ...

    async def close(self) -> None:
        """Release resources; idempotent."""
        ...


class MemoryAttributeStore:
    """Dict-backed store for tests."""

    def __init__(self) -> None:
        # Values are kept as orjson bytes so this backend behaves like SQLite:
        # non-JSON values are rejected and callers always get fresh copies.
        self._data: dict[str, bytes] = {}

    async def get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = {}
        for user_id in user_ids:
            raw = self._data.get(user_id)
            if raw is not None:
                result[user_id] = orjson.loads(raw)
        return result

    async def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        # Encode everything first so a bad item leaves the store untouched,
        # matching SQLite's single-transaction semantics.
        encoded = [(user_id, orjson.dumps(dict(attrs))) for user_id, attrs in items]
        self._data.update(encoded)

    async def close(self) -> None:
        return None


def open_store(
    config: AttributesConfig,
    environ: Mapping[str, str] | None = None,
    redis_health: RedisHealth | None = None,
) -> AttributeStore:
    """The configured backend, behind the cache unless `cache_ttl_seconds` is 0.

    `environ` (default: the process's) holds `password_env`. Nothing connects yet: a store
    that is down fails the first lookup, not the start. A Redis store tells `redis_health`
    whether each round trip was answered.
    """
    # Imported when chosen: a SQLite deployment never loads the Redis client, and the
    # backends can import AttributesUnavailable from here without a cycle.
    from consumer.attributes.urls import sqlite_path

    store: AttributeStore
    if config.backend == "sqlite":
        from consumer.attributes.sqlite import SqliteAttributeStore

        store = SqliteAttributeStore(
            sqlite_path(config.url), timeout_seconds=config.timeout_seconds
        )
    elif config.backend == "redis":
        from consumer.attributes.redis import RedisAttributeStore
        from consumer.secrets import read_secret

        env = os.environ if environ is None else environ
        store = RedisAttributeStore(
            config.url,
            key_prefix=config.key_prefix,
            timeout_seconds=config.timeout_seconds,
            password=read_secret(config.password_env, config.password_file, env) or None,
            ca_bundle=config.ca_bundle,
            health=redis_health,
        )
    else:
        raise ValueError(f"unknown attribute store backend {config.backend!r}")
    if config.cache_ttl_seconds == 0:
        return store
    from consumer.attributes.cache import CachedAttributeStore

    return CachedAttributeStore(
        store, ttl_seconds=config.cache_ttl_seconds, max_users=config.cache_max_users
    )
