"""Tests for consumer.attributes: both backends, importer and open_store."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from consumer.attributes import (
    AttributeStore,
    AttributesUnavailable,
    CachedAttributeStore,
    ImportReport,
    MemoryAttributeStore,
    SqliteAttributeStore,
    import_jsonl,
    open_store,
)
from consumer.config import AttributesConfig

NESTED = {
    "name": "Zoë 王 🚀",
    "tags": ["ä", "ß", None, True, 1.5],
    "address": {"city": "Zürich", "geo": {"lat": 47.37, "lon": 8.54}},
    "count": 2**53,
}


@pytest.mark.asyncio
async def test_round_trip_non_ascii_and_nested(store: AttributeStore) -> None:
    await store.put_many([("u1", NESTED), ("ユーザー", {"k": "v"})])
    got = await store.get_many(["u1", "ユーザー"])
    assert got == {"u1": NESTED, "ユーザー": {"k": "v"}}


@pytest.mark.asyncio
async def test_get_many_crosses_chunk_boundary(store: AttributeStore) -> None:
    ids = [f"user-{i}" for i in range(1200)]
    present = ids[::3]  # spread over all three 500-id chunks
    await store.put_many([(uid, {"i": uid}) for uid in present])
    got = await store.get_many(ids + ids[:50])  # duplicates must not matter
    assert got == {uid: {"i": uid} for uid in present}


@pytest.mark.asyncio
async def test_upsert_replaces_not_merges(store: AttributeStore) -> None:
    await store.put_many([("u1", {"a": 1, "b": 2})])
    await store.put_many([("u1", {"c": 3})])
    assert await store.get_many(["u1"]) == {"u1": {"c": 3}}


@pytest.mark.asyncio
async def test_last_write_wins_within_batch(store: AttributeStore) -> None:
    await store.put_many([("u1", {"v": 1}), ("u1", {"v": 2})])
    assert await store.get_many(["u1"]) == {"u1": {"v": 2}}


@pytest.mark.asyncio
async def test_missing_ids_absent(store: AttributeStore) -> None:
    await store.put_many([("u1", {"a": 1})])
    assert await store.get_many(["u1", "nope", "also-nope"]) == {"u1": {"a": 1}}
    assert await store.get_many({"nope"}) == {}


@pytest.mark.asyncio
async def test_empty_inputs(store: AttributeStore) -> None:
    await store.put_many([])
    assert await store.get_many([]) == {}
    assert await store.get_many(set()) == {}


@pytest.mark.asyncio
async def test_results_are_copies(store: AttributeStore) -> None:
    await store.put_many([("u1", {"tags": ["a"]})])
    (await store.get_many(["u1"]))["u1"]["tags"].append("mutated")
    assert await store.get_many(["u1"]) == {"u1": {"tags": ["a"]}}


@pytest.mark.asyncio
async def test_unserialisable_batch_is_all_or_nothing(store: AttributeStore) -> None:
    with pytest.raises(TypeError):
        await store.put_many([("ok", {"a": 1}), ("bad", {"a": object()})])
    assert await store.get_many(["ok", "bad"]) == {}


@pytest.mark.asyncio
async def test_sqlite_persists_and_creates_parent_dir(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "dir" / "attrs.db"
    first = SqliteAttributeStore(db)
    await first.put_many([("u1", NESTED)])
    await first.close()
    await first.close()  # idempotent

    second = SqliteAttributeStore(db)
    try:
        assert await second.get_many(["u1"]) == {"u1": NESTED}
    finally:
        await second.close()


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.asyncio
async def test_import_jsonl_good_and_bad_lines(store: AttributeStore, tmp_path: Path) -> None:
    lines = [
        orjson.dumps({"user_id": "u1", "attributes": {"plan": "pro"}}).decode(),  # 1
        "",  # 2: blank, skipped
        "{not json",  # 3
        orjson.dumps({"attributes": {}}).decode(),  # 4: missing user_id
        orjson.dumps({"user_id": 7, "attributes": {}}).decode(),  # 5: non-string id
        orjson.dumps({"user_id": "u9", "attributes": [1]}).decode(),  # 6: not an object
        "[1, 2]",  # 7: not an object at all
        "   ",  # 8: whitespace only, skipped
        orjson.dumps({"user_id": "u2", "attributes": {"city": "Köln"}}).decode(),  # 9
        orjson.dumps({"user_id": "u1", "attributes": {"plan": "free"}}).decode(),  # 10
    ]
    path = _write_lines(tmp_path / "in.jsonl", lines)

    report = await import_jsonl(store, path, batch_size=2, progress=False)

    assert isinstance(report, ImportReport)
    assert report.imported == 3
    assert report.rejected == 5
    assert [e.split(":", 1)[0] for e in report.examples] == [
        "line 3",
        "line 4",
        "line 5",
        "line 6",
        "line 7",
    ]
    assert "invalid JSON" in report.examples[0]
    assert "user_id" in report.examples[1]
    assert "user_id" in report.examples[2]
    assert "attributes" in report.examples[3]
    got = await store.get_many(["u1", "u2", "u9"])
    assert got == {"u1": {"plan": "free"}, "u2": {"city": "Köln"}}


@pytest.mark.asyncio
async def test_import_jsonl_caps_examples(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "bad.jsonl", ["nope"] * 30)
    report = await import_jsonl(MemoryAttributeStore(), path, progress=False)
    assert (report.imported, report.rejected) == (0, 30)
    assert len(report.examples) == 20
    assert report.examples[-1].startswith("line 20:")


@pytest.mark.asyncio
async def test_import_jsonl_invalid_utf8_and_no_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"user_id": "\xff", "attributes": {}}\n{"user_id": "u", "attributes": {}}')
    store = MemoryAttributeStore()
    report = await import_jsonl(store, path, progress=False)
    assert (report.imported, report.rejected) == (1, 1)
    assert report.examples[0].startswith("line 1: invalid JSON")
    assert await store.get_many(["u"]) == {"u": {}}


@pytest.mark.asyncio
async def test_import_jsonl_rejects_bad_batch_size(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "x.jsonl", [])
    with pytest.raises(ValueError, match="batch_size"):
        await import_jsonl(MemoryAttributeStore(), path, batch_size=0, progress=False)


def test_report_is_frozen() -> None:
    report = ImportReport(imported=1, rejected=0, examples=())
    with pytest.raises(AttributeError):
        report.imported = 2  # type: ignore[misc]


def _sqlite(url: str, **settings: object) -> AttributesConfig:
    return AttributesConfig.model_validate({"backend": "sqlite", "url": url, **settings})


@pytest.mark.asyncio
async def test_open_store_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_store(_sqlite("sqlite:///./data/attributes.db", cache_ttl_seconds=0))
    try:
        assert isinstance(s, SqliteAttributeStore)
        await s.put_many([("u", {"a": 1})])
    finally:
        await s.close()
    assert (tmp_path / "data" / "attributes.db").is_file()


@pytest.mark.asyncio
async def test_open_store_absolute(tmp_path: Path) -> None:
    db = tmp_path / "abs" / "attributes.db"
    assert str(db).startswith("/")
    s = open_store(_sqlite(f"sqlite:///{db}"))  # four slashes in total
    try:
        await s.put_many([("u", {"a": 1})])
    finally:
        await s.close()
    assert db.is_file()


@pytest.mark.asyncio
async def test_open_store_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_store(_sqlite("sqlite:///:memory:"))
    try:
        await s.put_many([("u", {"a": 1})])
        assert await s.get_many(["u"]) == {"u": {"a": 1}}
    finally:
        await s.close()
    assert os.listdir(tmp_path) == []  # nothing written to disk


@pytest.mark.asyncio
async def test_open_store_puts_the_cache_in_front_unless_its_ttl_is_0(tmp_path: Path) -> None:
    cached = open_store(_sqlite(f"sqlite:///{tmp_path}/a.db", cache_max_users=7))
    plain = open_store(_sqlite(f"sqlite:///{tmp_path}/b.db", cache_ttl_seconds=0))
    try:
        assert isinstance(cached, CachedAttributeStore)
        assert isinstance(plain, SqliteAttributeStore)
    finally:
        await cached.close()
        await plain.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgres:///x.db",
        "sqlite://x.db",
        "sqlite:///",
        "sqlite:///x.db?mode=ro",
        "./attributes.db",
        "",
    ],
)
def test_open_store_bad_url(url: str) -> None:
    with pytest.raises(ValueError, match=r"expected a sqlite URL like 'sqlite:///"):
        open_store(AttributesConfig.model_construct(backend="sqlite", url=url))


def test_sqlite_that_cannot_open_its_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-folder.db").mkdir()
    with pytest.raises(AttributesUnavailable, match=r"a-folder\.db'.*unable to open"):
        SqliteAttributeStore(tmp_path / "a-folder.db")


@pytest.mark.asyncio
async def test_sqlite_locked_by_another_writer_is_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "attrs.db"
    store = SqliteAttributeStore(db, timeout_seconds=0.05)
    other = sqlite3.connect(db, timeout=0, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # what a long write by another process looks like
    try:
        with pytest.raises(AttributesUnavailable, match="locked"):
            await store.put_many([("u", {"a": 1})])
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.put_many([("u", {"a": 1})])  # the store is usable again once the lock is gone
    assert await store.get_many(["u"]) == {"u": {"a": 1}}
    await store.close()
