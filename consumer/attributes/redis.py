"""Redis-backed attribute store: one hash per user, values in JSON so their types round-trip."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import orjson
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from consumer.attributes.store import AttributesUnavailable
from consumer.attributes.urls import shown_url
from consumer.redis_health import RedisHealth
from consumer.redisclient import open_redis
from consumer.secrets import Secret, redact

# Users per pipeline: one round trip each, small enough that one reply stays a few MB.
_CHUNK: Final = 1000
# Lookups come one batch per poll and imports one batch at a time; a few connections suffice.
_MAX_CONNECTIONS: Final = 8
# A hash field no JSON object can have (not UTF-8): marks a user stored with no attributes,
# since Redis has no empty hash and the user must still be found.
_EMPTY: Final = b"\xff"
# Another such field: where a followed value was read (redis_followed.py). A hash holding only
# this field is a deleted user, kept so that an older record read later cannot bring it back.
VERSION_FIELD: Final = b"\xfe"
EMPTY_FIELD: Final = _EMPTY  # for redis_followed.py


class RedisAttributeStore:
    """Attributes of `<key_prefix><user_id>` as hash fields, each value its JSON encoding.

    Lookups pipeline HGETALL for many users per round trip; writes replace a user's hash in a
    MULTI/EXEC transaction, so a reader never sees a half-written user. Every Redis failure
    (refused, timeout, READONLY replica, ...) raises AttributesUnavailable.
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
    ) -> None:
        self._shown = shown_url(url)
        self._prefix = key_prefix
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
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            async with self._unavailable():
                pipe = self._client.pipeline(transaction=False)
                for user_id in chunk:
                    pipe.hgetall(self._prefix + user_id)
                hashes: list[dict[bytes, bytes]] = await pipe.execute()
            for user_id, fields in zip(chunk, hashes, strict=True):
                fields.pop(VERSION_FIELD, None)
                if fields:
                    found[user_id] = {
                        name.decode(): orjson.loads(value)
                        for name, value in fields.items()
                        if name != _EMPTY
                    }
        return found

    async def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        # Encode everything first: a value that is not JSON fails before anything is written,
        # and the last entry of a user wins, as in one SQL transaction.
        encoded: dict[str, dict[FieldT, EncodableT]] = {
            self._prefix + user_id: {name: orjson.dumps(value) for name, value in attrs.items()}
            or {_EMPTY: b""}
            for user_id, attrs in items
        }
        keys = list(encoded)
        for start in range(0, len(keys), _CHUNK):
            async with self._unavailable():
                pipe = self._client.pipeline(transaction=True)
                for key in keys[start : start + _CHUNK]:
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
        self._health.answered()
