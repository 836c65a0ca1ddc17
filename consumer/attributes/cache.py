"""A small in-process TTL cache in front of any attribute store."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import orjson

from consumer.attributes.store import AttributeStore

# What the cache knows of a user: when that knowledge expires, and the attributes as JSON
# (None: the store has no such user).
_Entry = tuple[float, bytes | None]
# What an entry costs besides its JSON and its user id: the dict slot, the tuple, the objects.
_ENTRY_OVERHEAD = 200


class CachedAttributeStore:
    """Remembers each lookup for `ttl_seconds`, found or not, for at most `max_users` users
    and about `max_bytes` bytes (a few big users must not take the memory many small ones
    would).

    A user the store did not have is cached as absent for the same TTL, so a burst of events
    for unknown users costs one lookup, and attributes imported by another process show up
    within `ttl_seconds`. Writes through this wrapper invalidate their users. When
    full, the entries cached longest ago go first. All misses of one `get_many` are fetched
    in one backend call. `clock` is injectable so tests control time.
    """

    def __init__(
        self,
        backend: AttributeStore,
        *,
        ttl_seconds: float,
        max_users: int,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0 or max_users < 1 or max_bytes < 1:
            raise ValueError(
                "expected ttl_seconds > 0, max_users >= 1 and max_bytes >= 1, got "
                f"{ttl_seconds}, {max_users}, {max_bytes}"
            )
        self._backend = backend
        self._ttl = ttl_seconds
        self._max_users = max_users
        self._max_bytes = max_bytes
        self.bytes = 0  # what the entries cost, about
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        # Bumped by every write: a lookup that overlapped one does not cache what it read,
        # which may predate the write.
        self._generation = 0

    async def get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        now = self._clock()
        found: dict[str, dict[str, Any]] = {}
        misses: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            entry = self._entries.get(user_id)
            if entry is None or entry[0] <= now:
                misses.append(user_id)
            elif entry[1] is not None:
                found[user_id] = orjson.loads(entry[1])  # a fresh copy for every caller
        if not misses:
            return found
        generation = self._generation
        fetched = await self._backend.get_many(misses)
        found.update(fetched)
        if generation == self._generation:
            expires = self._clock() + self._ttl
            for user_id in misses:
                attributes = fetched.get(user_id)
                self._remember(
                    user_id, expires, None if attributes is None else orjson.dumps(attributes)
                )
        return found

    async def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        # Forgotten after the write, failed ones too (they may have written part): a lookup
        # during the write may have cached the old value.
        try:
            await self._backend.put_many(items)
        finally:
            self._forget(user_id for user_id, _ in items)

    def forget(self, user_ids: Iterable[str]) -> None:
        """Users written behind this cache's back (the attributes follower writes to the
        backend): their next lookup asks the store, and a lookup under way caches nothing."""
        self._forget(user_ids)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0
        await self._backend.close()

    def _remember(self, user_id: str, expires: float, value: bytes | None) -> None:
        self._drop(user_id)
        self._entries[user_id] = (expires, value)
        self.bytes += _cost(user_id, value)
        while len(self._entries) > self._max_users or self.bytes > self._max_bytes:
            oldest, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= _cost(oldest, dropped)

    def _drop(self, user_id: str) -> None:
        entry = self._entries.pop(user_id, None)
        if entry is not None:
            self.bytes -= _cost(user_id, entry[1])

    def _forget(self, user_ids: Iterable[str]) -> None:
        self._generation += 1
        for user_id in user_ids:
            self._drop(user_id)


def _cost(user_id: str, value: bytes | None) -> int:
    return len(user_id) + (len(value) if value is not None else 0) + _ENTRY_OVERHEAD
