"""Redis-backed attribute store: one hash per user, values in JSON so their types round-trip.

A user whose key is not a hash, or holds a value that is not JSON, was written by something
else: it is treated as not found (as GrowingIO sends a user it has nothing on), reported
(`AttributesCorrupt`: counted every time, logged the first), and never fails the other users
of the lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import orjson
from redis.exceptions import RedisError, ResponseError
from redis.typing import FieldT

from consumer.attributes.store import AttributesUnavailable
from consumer.attributes.urls import shown_url
from consumer.observer import NO_OBSERVER, AttributesCorrupt, Observer
from consumer.redis_health import RedisHealth
from consumer.redisclient import open_redis, raise_if_cancelled
from consumer.secrets import Secret, redact

# Users per pipeline: one round trip each, small enough that one reply stays a few MB.
_CHUNK: Final = 1000
# Bytes of values per import transaction: a MULTI/EXEC blocks the Redis every limit of the
# fleet shares for as long as it runs, so big users go a few at a time.
_CHUNK_BYTES: Final = 512 * 1024
# Users whose corruption was logged, remembered so each is logged once (a bounded memory).
_CORRUPT_REMEMBERED: Final = 10_000
# Lookups come one batch per poll and imports one batch at a time; a few connections suffice.
_MAX_CONNECTIONS: Final = 8
# A hash field no JSON object can have (not UTF-8): marks a user stored with no attributes,
# since Redis has no empty hash and the user must still be found.
_EMPTY: Final = b"\xff"
# Another such field: where a followed value was read (redis_followed.py). A hash holding only
# this field is a deleted user, kept so that an older record read later cannot bring it back.
VERSION_FIELD: Final = b"\xfe"
EMPTY_FIELD: Final = _EMPTY  # for redis_followed.py


class _Corrupt(Exception):
    """One user's data cannot be read (the reason names no value)."""


class RedisAttributeStore:
    """Attributes of `<key_prefix><user_id>` as hash fields, each value its JSON encoding.

    Lookups pipeline, for many users per round trip, HMGET of the attributes the channels
    send (`fields`; every field with HGETALL when not given) and HLEN (a user is found when
    its hash holds more than the version field of a deleted one); writes replace a user's
    hash in a MULTI/EXEC transaction, so a reader never sees a half-written user. Every Redis
    failure (refused, timeout, READONLY replica, ...) raises AttributesUnavailable.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str,
        timeout_seconds: float,
        password: Secret | None = None,
        ca_bundle: str | Path | None = None,
        health: RedisHealth | None = None,
        fields: Callable[[], Collection[str]] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._shown = shown_url(url)
        self._prefix = key_prefix
        self._fields = fields  # the names to fetch, asked at every lookup (a reload changes them)
        self._observer = NO_OBSERVER if observer is None else observer
        self._corrupt_seen: OrderedDict[str, None] = OrderedDict()
        self._health = health or RedisHealth()  # told of every round trip's success or failure
        self._client = open_redis(
            url,
            timeout_seconds=timeout_seconds,
            max_connections=_MAX_CONNECTIONS,
            password=password,
            ca_bundle=ca_bundle,
        )
        self._closed = False

    async def get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(user_ids))
        names = None if self._fields is None else sorted(self._fields())
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            async with self._unavailable():
                pipe = self._client.pipeline(transaction=False)
                for user_id in chunk:
                    key = self._prefix + user_id
                    if names is None:
                        pipe.hgetall(key)
                    else:  # the version field too: a hash of only that is a deleted user
                        pipe.hlen(key)
                        pipe.hmget(key, [*names, VERSION_FIELD])
                # One user's wrongly typed key answers with an error of its own, not the batch's.
                replies: list[Any] = await pipe.execute(raise_on_error=False)
                step = 1 if names is None else 2
                read = [replies[i : i + step] for i in range(0, len(replies), step)]
                for reply in read:  # anything but one key's wrong type fails the lookup
                    for answer in reply:
                        if isinstance(answer, Exception) and not _wrong_type(answer):
                            raise answer
            for user_id, reply in zip(chunk, read, strict=True):
                try:
                    attributes = _decoded(reply, names)
                except _Corrupt as why:
                    self._report(user_id, str(why))
                    continue
                if attributes is not None:
                    found[user_id] = attributes
        return found

    def _report(self, user_id: str, reason: str) -> None:
        first = user_id not in self._corrupt_seen
        self._corrupt_seen[user_id] = None
        self._corrupt_seen.move_to_end(user_id)
        if len(self._corrupt_seen) > _CORRUPT_REMEMBERED:
            self._corrupt_seen.popitem(last=False)
        self._observer.emit(AttributesCorrupt(self._prefix + user_id, reason, first))

    async def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        # Encode everything first: a value that is not JSON fails before anything is written,
        # and the last entry of a user wins, as in one SQL transaction.
        encoded: dict[str, dict[FieldT, bytes]] = {
            self._prefix + user_id: {name: orjson.dumps(value) for name, value in attrs.items()}
            or {_EMPTY: b""}
            for user_id, attrs in items
        }
        for chunk in _by_size(encoded):
            async with self._unavailable():
                pipe = self._client.pipeline(transaction=True)
                for key in chunk:
                    pipe.delete(key)
                    pipe.hset(key, mapping=encoded[key])
                await pipe.execute()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()

    @asynccontextmanager
    async def _unavailable(self) -> AsyncIterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            message = redact(str(exc)) or type(exc).__name__
            self._health.failed(message)
            raise AttributesUnavailable(f"redis attribute store {self._shown}: {message}") from exc
        raise_if_cancelled()
        self._health.answered()


def _wrong_type(error: Exception) -> bool:
    return isinstance(error, ResponseError) and str(error).startswith("WRONGTYPE")


def _decoded(reply: list[Any], names: list[str] | None) -> dict[str, Any] | None:
    """One user's attributes from its replies (HGETALL, or HLEN and HMGET); None: no user."""
    if any(isinstance(answer, Exception) for answer in reply):
        raise _Corrupt("its key is not a hash")
    if names is None:
        fields = {name: value for name, value in reply[0].items() if name != VERSION_FIELD}
        if not fields:  # no such key, or a deleted user's marker
            return None
        pairs = [(name, value) for name, value in fields.items() if name != _EMPTY]
    else:
        length, (*values, version) = reply
        if length - (version is not None) <= 0:  # no such key, or a deleted user's marker
            return None
        pairs = [(name.encode(), v) for name, v in zip(names, values, strict=True) if v is not None]
    attributes: dict[str, Any] = {}
    for name, value in pairs:
        try:
            attributes[name.decode()] = orjson.loads(value)
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            raise _Corrupt(f"field {name.decode(errors='replace')!r} is not JSON") from None
    return attributes


def _by_size(encoded: Mapping[str, Mapping[FieldT, bytes]]) -> list[list[str]]:
    """The keys in transactions of at most `_CHUNK` users and about `_CHUNK_BYTES` bytes."""
    chunks: list[list[str]] = [[]]
    size = 0
    for key, fields in encoded.items():
        weight = len(key) + sum(len(str(name)) + len(value) for name, value in fields.items())
        if chunks[-1] and (len(chunks[-1]) >= _CHUNK or size + weight > _CHUNK_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(key)
        size += weight
    return [chunk for chunk in chunks if chunk]
