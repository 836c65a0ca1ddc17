"""Redis-backed attribute store: one hash per user, values in JSON so their types round-trip."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from consumer.attributes.store import AttributesUnavailable
from consumer.attributes.urls import remember_password, shown_url
from consumer.redis_health import RedisHealth
from consumer.secrets import Secret, redact

# Users per pipeline: one round trip each, small enough that one reply stays a few MB.
_CHUNK: Final = 1000
# Lookups come one batch per poll and imports one batch at a time; a few connections suffice.
_MAX_CONNECTIONS: Final = 8
# A hash field no JSON object can have (not UTF-8): marks a user stored with no attributes,
# since Redis has no empty hash and the user must still be found.
_EMPTY: Final = b"\xff"


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
        remember_password(url)  # the client's own messages are scrubbed too
        self._shown = shown_url(url)
        self._prefix = key_prefix
        self._health = health or RedisHealth()  # told of every round trip's success or failure
        options: dict[str, Any] = {}
        if password is not None:  # the URL carries none (check-config makes sure)
            options["password"] = password.reveal()
        if urlsplit(url).scheme == "rediss":
            # Certificate and host name always verified (redis-py 5 left the host name out).
            options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
            if ca_bundle is not None:
                options["ssl_ca_certs"] = str(ca_bundle)
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=_MAX_CONNECTIONS,
            timeout=timeout_seconds,  # waiting for a free connection
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            # One quick retry heals a pooled connection that a Redis restart closed; a store
            # that is really down is reported at once, and the caller decides about retrying.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1, (RedisConnectionError,)),
            **options,
        )
        self._client = Redis.from_pool(pool)
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
