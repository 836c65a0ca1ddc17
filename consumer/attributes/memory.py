"""An attribute store in a dict, for tests and the demo's in-process runs."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

from consumer.attributes.store import Applied, Update
from consumer.attributes.versions import Version, newer, newest_per_user, topic_tag, version_of


class MemoryAttributeStore:
    """Dict-backed store for tests, followed like the real ones (`FollowedStore`)."""

    def __init__(self) -> None:
        # Values are kept as orjson bytes so this backend behaves like SQLite:
        # non-JSON values are rejected and callers always get fresh copies.
        self._data: dict[str, bytes] = {}
        self._versions: dict[str, Version] = {}
        self._positions: dict[str, dict[int, int]] = {}

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

    async def positions(self, topic: str) -> dict[int, int]:
        return dict(self._positions.get(topic, {}))

    async def apply(
        self, topic: str, updates: Sequence[Update], positions: Mapping[int, int]
    ) -> Applied:
        tag = topic_tag(topic)
        latest = newest_per_user(tag, list(updates))
        accepted = [
            u for u in latest.values() if newer(version_of(tag, u), self._versions.get(u.user_id))
        ]
        encoded = {
            u.user_id: None if u.attributes is None else orjson.dumps(dict(u.attributes))
            for u in accepted
        }
        for update in accepted:
            value = encoded[update.user_id]
            if value is None:
                self._data.pop(update.user_id, None)
            else:
                self._data[update.user_id] = value
            self._versions[update.user_id] = version_of(tag, update)
        held = self._positions.setdefault(topic, {})
        for partition, offset in positions.items():
            held[partition] = max(offset, held.get(partition, 0))
        deleted = sum(u.attributes is None for u in accepted)
        return Applied(len(accepted) - deleted, deleted, len(updates) - len(accepted))

    async def close(self) -> None:
        return None
