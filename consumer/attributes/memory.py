"""An attribute store in a dict, for tests and the demo's in-process runs."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson


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
