"""SQLite-backed attribute store (stdlib sqlite3, off the event loop)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from consumer.attributes.store import Applied, AttributesUnavailable, Update
from consumer.attributes.versions import Version, newer, newest_per_user, topic_tag, version_of

# SQLite's default SQLITE_MAX_VARIABLE_NUMBER is 999 on older builds; stay well below.
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_attributes (
    user_id TEXT PRIMARY KEY,
    attributes BLOB NOT NULL
)
"""
# Where the value of each followed user was read (a deleted user keeps its row here, so an
# older record read later cannot bring it back), and how far each partition was read.
_FOLLOW_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS attribute_versions (
    user_id TEXT PRIMARY KEY,
    topic_tag INTEGER NOT NULL,
    part INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    record_ms INTEGER NOT NULL
) WITHOUT ROWID
""",
    """
CREATE TABLE IF NOT EXISTS attribute_positions (
    topic TEXT NOT NULL,
    part INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, part)
) WITHOUT ROWID
""",
)

_SET_VERSION = """
INSERT INTO attribute_versions (user_id, topic_tag, part, record_offset, record_ms)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT(user_id) DO UPDATE SET topic_tag = excluded.topic_tag, part = excluded.part,
    record_offset = excluded.record_offset, record_ms = excluded.record_ms
"""

_SET_POSITION = """
INSERT INTO attribute_positions (topic, part, next_offset) VALUES (?, ?, ?)
ON CONFLICT(topic, part) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)
"""

_UPSERT = """
INSERT INTO user_attributes (user_id, attributes) VALUES (?, ?)
ON CONFLICT(user_id) DO UPDATE SET attributes = excluded.attributes
"""


class SqliteAttributeStore:
    """One shared connection serialised by a lock; all I/O runs in worker threads.

    Followed (`FollowedStore`): the rows, their versions and the partitions' positions change in
    one transaction, so a restart resumes exactly where the last commit left off, and several
    processes following into one file (`run --workers`) never put an older value back. A
    locked, unreadable or full database raises AttributesUnavailable.
    """

    def __init__(self, path: str | Path, *, timeout_seconds: float = 5.0) -> None:
        self._db = db = str(path)
        self._lock = threading.Lock()
        self._closed = False
        with self._unavailable():
            if db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so put_many controls its own transaction.
            # timeout: how long a statement waits for another writer's lock before failing.
            self._conn = sqlite3.connect(
                db, timeout=timeout_seconds, check_same_thread=False, isolation_level=None
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against app crashes under WAL; only power loss can drop
            # the last commits, which a re-import recovers.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            for statement in (_SCHEMA, *_FOLLOW_SCHEMA):
                self._conn.execute(statement)

    async def get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        if not user_ids:
            return {}
        return await asyncio.to_thread(self._get_many, user_ids)

    async def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        if not items:
            return
        await asyncio.to_thread(self._put_many, items)

    async def positions(self, topic: str) -> dict[int, int]:
        return await asyncio.to_thread(self._positions, topic)

    async def apply(
        self, topic: str, updates: Sequence[Update], positions: Mapping[int, int]
    ) -> Applied:
        return await asyncio.to_thread(self._apply, topic, updates, positions)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        ids = list(dict.fromkeys(user_ids))
        rows: list[tuple[str, bytes]] = []
        with self._lock, self._unavailable():
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                sql = (
                    "SELECT user_id, attributes FROM user_attributes "
                    f"WHERE user_id IN ({','.join('?' * len(chunk))})"
                )
                rows.extend(self._conn.execute(sql, chunk).fetchall())
        # Decode outside the lock so other queries are not held up by JSON parsing.
        return {user_id: orjson.loads(raw) for user_id, raw in rows}

    def _put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        # Encode before locking: keeps the critical section short and a bad
        # value fails before the transaction starts.
        encoded = [(user_id, orjson.dumps(dict(attrs))) for user_id, attrs in items]
        with self._lock, self._unavailable():
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(_UPSERT, encoded)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _positions(self, topic: str) -> dict[int, int]:
        sql = "SELECT part, next_offset FROM attribute_positions WHERE topic = ?"
        with self._lock, self._unavailable():
            return dict(self._conn.execute(sql, (topic,)).fetchall())

    def _apply(
        self, topic: str, updates: Sequence[Update], positions: Mapping[int, int]
    ) -> Applied:
        tag = topic_tag(topic)
        latest = newest_per_user(tag, list(updates))
        # Encoded before locking, as in put_many.
        values = {
            u.user_id: None if u.attributes is None else orjson.dumps(dict(u.attributes))
            for u in latest.values()
        }
        with self._lock, self._unavailable():
            # IMMEDIATE: the write lock from the start, so no other process writes between
            # reading the stored versions and replacing them.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                stored = self._versions(list(latest))
                accepted = [
                    u for u in latest.values() if newer(version_of(tag, u), stored.get(u.user_id))
                ]
                self._write(tag, accepted, values)
                self._conn.executemany(_SET_POSITION, [(topic, p, o) for p, o in positions.items()])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        deleted = sum(u.attributes is None for u in accepted)
        return Applied(len(accepted) - deleted, deleted, len(updates) - len(accepted))

    def _versions(self, user_ids: list[str]) -> dict[str, Version]:
        found: dict[str, Version] = {}
        for start in range(0, len(user_ids), _CHUNK):
            chunk = user_ids[start : start + _CHUNK]
            sql = (
                "SELECT user_id, topic_tag, part, record_offset, record_ms "
                f"FROM attribute_versions WHERE user_id IN ({','.join('?' * len(chunk))})"
            )
            for user_id, *version in self._conn.execute(sql, chunk):
                found[user_id] = Version(*version)
        return found

    def _write(self, tag: int, accepted: list[Update], values: dict[str, bytes | None]) -> None:
        rows = [(u.user_id, values[u.user_id]) for u in accepted]
        self._conn.executemany(_UPSERT, [row for row in rows if row[1] is not None])
        self._conn.executemany(
            "DELETE FROM user_attributes WHERE user_id = ?",
            [(user_id,) for user_id, value in rows if value is None],
        )
        self._conn.executemany(
            _SET_VERSION,
            [(u.user_id, tag, u.partition, u.offset, u.timestamp_ms) for u in accepted],
        )

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        try:
            yield
        # DatabaseError covers OperationalError (locked, I/O error, disk full) and corruption.
        except (sqlite3.DatabaseError, OSError) as exc:
            raise AttributesUnavailable(f"sqlite attribute store {self._db!r}: {exc}") from exc

    def _close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
