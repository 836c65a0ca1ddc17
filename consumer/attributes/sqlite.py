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

from consumer.attributes.store import AttributesUnavailable

# SQLite's default SQLITE_MAX_VARIABLE_NUMBER is 999 on older builds; stay well below.
_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_attributes (
    user_id TEXT PRIMARY KEY,
    attributes BLOB NOT NULL
)
"""

_UPSERT = """
INSERT INTO user_attributes (user_id, attributes) VALUES (?, ?)
ON CONFLICT(user_id) DO UPDATE SET attributes = excluded.attributes
"""


class SqliteAttributeStore:
    """One shared connection serialised by a lock; all I/O runs in worker threads.

    A locked, unreadable or full database raises AttributesUnavailable.
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
            self._conn.execute(_SCHEMA)

    async def get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        if not user_ids:
            return {}
        return await asyncio.to_thread(self._get_many, user_ids)

    async def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        if not items:
            return
        await asyncio.to_thread(self._put_many, items)

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
