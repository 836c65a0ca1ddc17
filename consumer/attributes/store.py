"""Attribute store interface, in-memory backend and URL-based factory."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import orjson

from consumer.attributes.sqlite import SqliteAttributeStore

_SQLITE_PREFIX = "sqlite:///"


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


def open_store(backend: str, url: str) -> AttributeStore:
    """Build a store from config, e.g. ``open_store("sqlite", "sqlite:///./attributes.db")``."""
    if backend == "sqlite":
        return SqliteAttributeStore(_sqlite_path(url))
    if backend == "redis":
        raise NotImplementedError("redis backend arrives in a later release")
    raise ValueError(f"unknown attribute store backend {backend!r}; expected 'sqlite' or 'redis'")


def _sqlite_path(url: str) -> str:
    path = url[len(_SQLITE_PREFIX) :] if url.startswith(_SQLITE_PREFIX) else ""
    # Query strings are rejected rather than silently becoming part of the filename.
    if not path or "?" in path:
        raise ValueError(
            "expected a sqlite URL like 'sqlite:///./attributes.db' (relative), "
            f"'sqlite:////abs/path.db' (absolute) or 'sqlite:///:memory:', got {url!r}"
        )
    return path
