"""The followed write path of the SQLite and in-memory stores: the newer value wins whoever
writes last, tombstones stick, positions move forward only (the Redis store runs the same rule
in Lua: tests/integration/test_attributes_topic.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from consumer.attributes import AttributesUnavailable, SqliteAttributeStore
from consumer.attributes.store import Applied, FollowedStore, Update
from consumer.attributes.versions import Version, newer, topic_tag

TOPIC = "users"


def up(user: str, attributes: Mapping[str, Any] | None, offset: int, **where: int) -> Update:
    return Update(user, attributes, where.get("partition", 0), offset, where.get("ms", offset))


async def test_stores_deletes_and_moves_the_positions(store: FollowedStore) -> None:
    applied = await store.apply(
        TOPIC,
        [up("a", {"x": 1}, 0), up("b", {}, 1), up("c", {"y": [1, None]}, 0, partition=1)],
        {0: 2, 1: 1},
    )
    assert applied == Applied(stored=3)
    assert await store.get_many(["a", "b", "c"]) == {"a": {"x": 1}, "b": {}, "c": {"y": [1, None]}}
    assert await store.apply(TOPIC, [up("a", None, 2)], {0: 3}) == Applied(deleted=1)
    assert await store.get_many(["a", "b"]) == {"b": {}}
    assert await store.positions(TOPIC) == {0: 3, 1: 1}
    assert await store.positions("another-topic") == {}


async def test_an_older_value_never_replaces_a_newer_one(store: FollowedStore) -> None:
    await store.apply(TOPIC, [up("a", {"v": 5}, 5)], {0: 6})
    assert await store.apply(TOPIC, [up("a", {"v": 3}, 3)], {0: 4}) == Applied(superseded=1)
    assert await store.get_many(["a"]) == {"a": {"v": 5}}
    # The positions do not go back either: a slow writer cannot make a restart read twice.
    assert await store.positions(TOPIC) == {0: 6}


async def test_reading_a_record_again_writes_nothing(store: FollowedStore) -> None:
    batch = [up("a", {"v": 1}, 0), up("b", None, 1)]
    assert await store.apply(TOPIC, batch, {0: 2}) == Applied(stored=1, deleted=1)
    assert await store.apply(TOPIC, batch, {0: 2}) == Applied(superseded=2)


async def test_a_deleted_user_is_not_brought_back_by_an_older_record(
    store: FollowedStore,
) -> None:
    await store.apply(TOPIC, [up("a", {"v": 1}, 1), up("a", None, 2)], {0: 3})
    assert await store.get_many(["a"]) == {}
    assert await store.apply(TOPIC, [up("a", {"v": 1}, 1)], {0: 2}) == Applied(superseded=1)
    assert await store.get_many(["a"]) == {}
    assert await store.apply(TOPIC, [up("a", {"v": 3}, 3)], {0: 4}) == Applied(stored=1)
    assert await store.get_many(["a"]) == {"a": {"v": 3}}


async def test_within_a_batch_the_last_record_of_a_user_wins(store: FollowedStore) -> None:
    batch = [up("a", {"v": 1}, 0), up("a", {"v": 2}, 1), up("a", None, 2), up("a", {"v": 4}, 3)]
    assert await store.apply(TOPIC, batch, {0: 4}) == Applied(stored=1, superseded=3)
    assert await store.get_many(["a"]) == {"a": {"v": 4}}


async def test_across_partitions_the_record_timestamp_decides(store: FollowedStore) -> None:
    # The topic gained partitions and the user's key moved: offsets of two partitions say
    # nothing about each other, the record timestamps do.
    await store.apply(TOPIC, [up("a", {"v": "old"}, 90, partition=0, ms=1_000)], {0: 91})
    moved = up("a", {"v": "new"}, 2, partition=5, ms=2_000)
    assert await store.apply(TOPIC, [moved], {5: 3}) == Applied(stored=1)
    late = up("a", {"v": "older"}, 95, partition=0, ms=1_500)
    assert await store.apply(TOPIC, [late], {0: 96}) == Applied(superseded=1)
    assert await store.get_many(["a"]) == {"a": {"v": "new"}}


async def test_a_value_of_another_topic_always_wins(store: FollowedStore) -> None:
    # The config names a new topic: its offsets start again at 0 and must not be refused.
    await store.apply(TOPIC, [up("a", {"v": "v1"}, 1000)], {0: 1001})
    assert await store.apply("users-v2", [up("a", {"v": "v2"}, 0)], {0: 1}) == Applied(stored=1)
    assert await store.get_many(["a"]) == {"a": {"v": "v2"}}
    assert await store.positions("users-v2") == {0: 1}


async def test_a_value_that_is_not_json_writes_nothing(store: FollowedStore) -> None:
    with pytest.raises(TypeError):
        await store.apply(TOPIC, [up("a", {"v": 1}, 0), up("b", {"v": object()}, 1)], {0: 2})
    assert await store.get_many(["a", "b"]) == {}
    assert await store.positions(TOPIC) == {}


async def test_an_import_and_the_topic_both_write_the_latest_wins(store: FollowedStore) -> None:
    await store.apply(TOPIC, [up("a", {"v": "topic"}, 0)], {0: 1})
    await store.put_many([("a", {"v": "import"})])
    assert await store.get_many(["a"]) == {"a": {"v": "import"}}
    await store.apply(TOPIC, [up("a", {"v": "topic again"}, 1)], {0: 2})
    assert await store.get_many(["a"]) == {"a": {"v": "topic again"}}


async def test_two_processes_following_into_one_sqlite_file_never_regress(
    tmp_path: Path,
) -> None:
    # `run --workers 2` with SQLite: two connections, one file, one of them behind.
    ahead = SqliteAttributeStore(tmp_path / "attrs.db")
    behind = SqliteAttributeStore(tmp_path / "attrs.db")
    try:
        await ahead.apply(TOPIC, [up("a", {"v": 2}, 2), up("b", None, 3)], {0: 4})
        late = [up("a", {"v": 1}, 1), up("b", {"v": 1}, 0), up("c", {"v": 1}, 1)]
        assert await behind.apply(TOPIC, late, {0: 2}) == Applied(stored=1, superseded=2)
        assert await ahead.get_many(["a", "b", "c"]) == {"a": {"v": 2}, "c": {"v": 1}}
        assert await behind.positions(TOPIC) == {0: 4}
    finally:
        await ahead.close()
        await behind.close()


async def test_a_restart_reads_the_positions_written_with_the_rows(tmp_path: Path) -> None:
    store = SqliteAttributeStore(tmp_path / "attrs.db")
    await store.apply(TOPIC, [up("a", {"v": 1}, 41, partition=2)], {2: 42})
    await store.close()
    store = SqliteAttributeStore(tmp_path / "attrs.db")
    try:
        assert await store.positions(TOPIC) == {2: 42}
        assert await store.get_many(["a"]) == {"a": {"v": 1}}
    finally:
        await store.close()


async def test_a_locked_sqlite_file_is_unavailable_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "attrs.db"
    store = SqliteAttributeStore(db, timeout_seconds=0.05)
    other = sqlite3.connect(db, timeout=0, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AttributesUnavailable, match="locked"):
            await store.apply(TOPIC, [up("a", {"v": 1}, 0)], {0: 1})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await store.positions(TOPIC) == {}
    assert await store.apply(TOPIC, [up("a", {"v": 1}, 0)], {0: 1}) == Applied(stored=1)
    await store.close()


def test_the_rule() -> None:
    tag = topic_tag(TOPIC)
    assert newer(Version(tag, 0, 5, 0), None)
    assert newer(Version(tag, 0, 6, 0), Version(tag, 0, 5, 9))
    assert not newer(Version(tag, 0, 5, 9), Version(tag, 0, 5, 0)), "equal is not newer"
    assert not newer(Version(tag, 0, 4, 9), Version(tag, 0, 5, 0))
    assert newer(Version(tag, 1, 0, 10), Version(tag, 0, 5, 9))
    assert not newer(Version(tag, 1, 0, 9), Version(tag, 0, 5, 9))
    assert newer(Version(topic_tag("other"), 0, 0, 0), Version(tag, 0, 5, 9))
    assert topic_tag(TOPIC) == topic_tag("users") != topic_tag("users2")
    assert 0 <= topic_tag(TOPIC) < 2**32
