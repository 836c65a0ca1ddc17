"""The Redis store's followed write path against a real redis-server: the Lua comparison is the
rule of versions.py, deleted users stay deleted, positions move forward only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from redis.asyncio import Redis

from consumer.attributes.redis import VERSION_FIELD
from consumer.attributes.redis_followed import FollowedRedisStore
from consumer.attributes.store import Applied, Update

TOPIC = "users"


def up(user: str, attributes: Mapping[str, Any] | None, offset: int, **where: int) -> Update:
    return Update(user, attributes, where.get("partition", 0), offset, where.get("ms", offset))


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[FollowedRedisStore]:
    s = FollowedRedisStore(redis_url, key_prefix=redis_prefix, timeout_seconds=3)
    yield s
    await s.close()


async def test_values_round_trip_and_the_version_stays_inside(
    store: FollowedRedisStore, redis_client: Redis, redis_prefix: str
) -> None:
    nested = {"name": "Zoë 王", "tags": ["a", None, True, 1.5], "n": 2**53, "": "empty name"}
    applied = await store.apply(TOPIC, [up("u1", nested, 3), up("u2", {}, 4)], {0: 5})
    assert applied == Applied(stored=2)
    got = await store.get_many(["u1", "u2", "absent"])
    assert got == {"u1": nested, "u2": {}}
    assert type(got["u1"]["n"]) is int
    version = await redis_client.hget(f"{redis_prefix}u1", VERSION_FIELD)
    assert version is not None
    assert version.split(b":")[1:] == [b"0", b"3", b"3"]  # partition, offset, timestamp


async def test_an_older_record_is_refused_and_a_deleted_user_stays_deleted(
    store: FollowedRedisStore,
) -> None:
    await store.apply(TOPIC, [up("a", {"v": 5}, 5), up("d", {"v": 1}, 1), up("d", None, 6)], {0: 7})
    assert await store.get_many(["a", "d"]) == {"a": {"v": 5}}
    late = [up("a", {"v": 3}, 3), up("d", {"v": 1}, 1)]
    assert await store.apply(TOPIC, late, {0: 4}) == Applied(superseded=2)
    assert await store.get_many(["a", "d"]) == {"a": {"v": 5}}
    assert await store.apply(TOPIC, [up("d", {"v": 7}, 7)], {0: 8}) == Applied(stored=1)
    assert await store.get_many(["d"]) == {"d": {"v": 7}}


async def test_across_partitions_the_timestamp_and_across_topics_the_newcomer(
    store: FollowedRedisStore,
) -> None:
    await store.apply(TOPIC, [up("a", {"v": "old"}, 90, partition=0, ms=1_000)], {0: 91})
    late = up("a", {"v": "older"}, 95, partition=3, ms=999)
    assert await store.apply(TOPIC, [late], {3: 96}) == Applied(superseded=1)
    moved = up("a", {"v": "new"}, 2, partition=3, ms=2_000)
    assert await store.apply(TOPIC, [moved], {3: 3}) == Applied(stored=1)
    assert await store.apply("users-v2", [up("a", {"v": "v2"}, 0)], {0: 1}) == Applied(stored=1)
    assert await store.get_many(["a"]) == {"a": {"v": "v2"}}


async def test_positions_move_forward_only(store: FollowedRedisStore) -> None:
    await store.apply(TOPIC, [], {0: 10, 1: 3})
    await store.apply(TOPIC, [], {0: 4, 1: 7, 2: 1})
    assert await store.positions(TOPIC) == {0: 10, 1: 7, 2: 1}
    assert await store.positions("another") == {}


async def test_big_batches_and_many_attributes(store: FollowedRedisStore) -> None:
    many = {f"attribute-{i}": i for i in range(450)}  # several HSET calls of 200 pairs
    batch = [up(f"u{i}", {"i": i}, i) for i in range(1_200)] + [up("wide", many, 1_200)]
    assert await store.apply(TOPIC, batch, {0: 1_201}) == Applied(stored=1_201)
    found = await store.get_many([f"u{i}" for i in range(1_200)] + ["wide"])
    assert len(found) == 1_201
    assert found["u1199"] == {"i": 1199}
    assert found["wide"] == many
    assert await store.positions(TOPIC) == {0: 1_201}


async def test_an_import_replaces_a_followed_user_and_the_topic_writes_again(
    store: FollowedRedisStore,
) -> None:
    await store.apply(TOPIC, [up("a", {"v": "topic"}, 0)], {0: 1})
    await store.put_many([("a", {"v": "import"})])
    assert await store.get_many(["a"]) == {"a": {"v": "import"}}
    assert await store.apply(TOPIC, [up("a", {"v": "again"}, 1)], {0: 2}) == Applied(stored=1)
    assert await store.get_many(["a"]) == {"a": {"v": "again"}}
