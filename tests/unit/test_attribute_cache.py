"""The TTL cache in front of an attribute store: hits, misses, expiry, eviction, invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import Any

import pytest

from consumer.attributes import AttributesUnavailable, CachedAttributeStore, MemoryAttributeStore
from tests.support.clock import ManualClock

TTL = 30.0


class CountingStore(MemoryAttributeStore):
    """The in-memory store, remembering which users each lookup asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[list[str]] = []
        self.closed = False
        self.failing = False
        self.hold: asyncio.Event | None = None  # when set, lookups wait for it
        self.read = asyncio.Event()  # a lookup has read the store

    async def get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        self.lookups.append(sorted(user_ids))
        if self.failing:
            raise AttributesUnavailable("store down")
        found = await super().get_many(user_ids)
        self.read.set()
        if self.hold is not None:
            await self.hold.wait()
        return found

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def backend() -> CountingStore:
    return CountingStore()


def cached(
    backend: CountingStore, clock: ManualClock, max_users: int = 100
) -> CachedAttributeStore:
    return CachedAttributeStore(backend, ttl_seconds=TTL, max_users=max_users, clock=clock)


async def fill(backend: CountingStore, items: Mapping[str, Mapping[str, Any]]) -> None:
    await backend.put_many(list(items.items()))


async def test_a_second_lookup_within_the_ttl_is_answered_from_the_cache(
    backend: CountingStore, clock: ManualClock
) -> None:
    await fill(backend, {"u1": {"hobby": "chess"}})
    store = cached(backend, clock)
    assert await store.get_many(["u1"]) == {"u1": {"hobby": "chess"}}
    clock.now += TTL - 0.001
    assert await store.get_many(["u1"]) == {"u1": {"hobby": "chess"}}
    assert backend.lookups == [["u1"]]


async def test_a_user_not_found_is_cached_as_absent(
    backend: CountingStore, clock: ManualClock
) -> None:
    store = cached(backend, clock)
    assert await store.get_many(["ghost"]) == {}
    await fill(backend, {"ghost": {"hobby": "late"}})  # written behind the cache's back
    assert await store.get_many(["ghost"]) == {}
    assert backend.lookups == [["ghost"]]


async def test_an_entry_expires_after_the_ttl(backend: CountingStore, clock: ManualClock) -> None:
    await fill(backend, {"u1": {"v": 1}})
    store = cached(backend, clock)
    await store.get_many(["u1", "ghost"])
    await fill(backend, {"u1": {"v": 2}, "ghost": {"v": 3}})
    clock.now += TTL
    assert await store.get_many(["u1", "ghost"]) == {"u1": {"v": 2}, "ghost": {"v": 3}}
    assert backend.lookups == [["ghost", "u1"], ["ghost", "u1"]]


async def test_all_misses_of_a_lookup_go_to_the_store_in_one_call(
    backend: CountingStore, clock: ManualClock
) -> None:
    await fill(backend, {u: {"name": u} for u in ("a", "b", "c", "d")})
    store = cached(backend, clock)
    await store.get_many(["a", "b"])
    got = await store.get_many(["a", "b", "c", "d", "e", "c"])
    assert got == {u: {"name": u} for u in ("a", "b", "c", "d")}
    assert backend.lookups == [["a", "b"], ["c", "d", "e"]]
    assert await store.get_many(["a", "b", "c", "d", "e"]) == got
    assert len(backend.lookups) == 2


async def test_when_full_the_oldest_entries_go_first(
    backend: CountingStore, clock: ManualClock
) -> None:
    await fill(backend, {u: {"name": u} for u in ("a", "b", "c")})
    store = cached(backend, clock, max_users=2)
    for user in ("a", "b", "c"):
        await store.get_many([user])
    backend.lookups.clear()
    await store.get_many(["b", "c"])
    assert backend.lookups == []
    assert await store.get_many(["a"]) == {"a": {"name": "a"}}  # evicted, so asked again
    assert backend.lookups == [["a"]]


async def test_a_refreshed_entry_counts_as_young_again(
    backend: CountingStore, clock: ManualClock
) -> None:
    store = cached(backend, clock, max_users=2)
    await store.get_many(["a"])
    await store.get_many(["b"])
    clock.now += TTL  # both expire; "a" is fetched again and becomes the youngest
    await store.get_many(["a"])
    await store.get_many(["c"])  # full: "b" goes, not "a"
    backend.lookups.clear()
    await store.get_many(["a", "c"])
    await store.get_many(["b"])
    assert backend.lookups == [["b"]]


async def test_a_write_through_the_cache_invalidates_its_users(
    backend: CountingStore, clock: ManualClock
) -> None:
    await fill(backend, {"u1": {"v": 1}, "u2": {"v": 1}})
    store = cached(backend, clock)
    await store.get_many(["u1", "u2", "ghost"])
    await store.put_many([("u1", {"v": 2}), ("ghost", {"v": 9})])
    assert await store.get_many(["u1", "u2", "ghost"]) == {
        "u1": {"v": 2},
        "u2": {"v": 1},
        "ghost": {"v": 9},
    }
    assert backend.lookups[-1] == ["ghost", "u1"]  # u2 still came from the cache


async def test_a_lookup_that_overlapped_a_write_is_not_cached(
    backend: CountingStore, clock: ManualClock
) -> None:
    await fill(backend, {"u1": {"v": 1}})
    store = cached(backend, clock)
    backend.hold = asyncio.Event()
    lookup = asyncio.create_task(store.get_many(["u1"]))
    await backend.read.wait()  # the lookup has read the old value
    await store.put_many([("u1", {"v": 2})])
    backend.hold.set()
    assert await lookup == {"u1": {"v": 1}}  # read before the write finished
    backend.hold = None
    assert await store.get_many(["u1"]) == {"u1": {"v": 2}}  # not the stale read


async def test_users_written_behind_the_cache_are_forgotten(
    backend: CountingStore, clock: ManualClock
) -> None:
    # The attributes follower writes to the backend itself and tells the cache who changed.
    await fill(backend, {"u1": {"v": 1}, "u2": {"v": 1}})
    store = cached(backend, clock)
    await store.get_many(["u1", "u2", "ghost"])
    await backend.put_many([("u1", {"v": 2}), ("ghost", {"v": 9})])
    store.forget(["u1", "ghost"])
    assert await store.get_many(["u1", "u2", "ghost"]) == {
        "u1": {"v": 2},
        "u2": {"v": 1},
        "ghost": {"v": 9},
    }
    assert backend.lookups[-1] == ["ghost", "u1"]


async def test_a_lookup_that_overlapped_a_forget_is_not_cached(
    backend: CountingStore, clock: ManualClock
) -> None:
    await fill(backend, {"u1": {"v": 1}})
    store = cached(backend, clock)
    backend.hold = asyncio.Event()
    lookup = asyncio.create_task(store.get_many(["u1"]))
    await backend.read.wait()
    await backend.put_many([("u1", {"v": 2})])
    store.forget(["u1"])
    backend.hold.set()
    assert await lookup == {"u1": {"v": 1}}
    backend.hold = None
    assert await store.get_many(["u1"]) == {"u1": {"v": 2}}


async def test_a_failed_lookup_caches_nothing(backend: CountingStore, clock: ManualClock) -> None:
    await fill(backend, {"u1": {"v": 1}})
    store = cached(backend, clock)
    backend.failing = True
    with pytest.raises(AttributesUnavailable):
        await store.get_many(["u1"])
    backend.failing = False
    assert await store.get_many(["u1"]) == {"u1": {"v": 1}}
    assert len(backend.lookups) == 2


async def test_callers_get_their_own_copies(backend: CountingStore, clock: ManualClock) -> None:
    await fill(backend, {"u1": {"tags": ["a"]}})
    store = cached(backend, clock)
    (await store.get_many(["u1"]))["u1"]["tags"].append("mutated")
    (await store.get_many(["u1"]))["u1"]["tags"].append("mutated")
    assert await store.get_many(["u1"]) == {"u1": {"tags": ["a"]}}


async def test_an_empty_lookup_asks_nothing(backend: CountingStore, clock: ManualClock) -> None:
    store = cached(backend, clock)
    assert await store.get_many([]) == {}
    assert backend.lookups == []


async def test_close_closes_the_store(backend: CountingStore, clock: ManualClock) -> None:
    await cached(backend, clock).close()
    assert backend.closed


@pytest.mark.parametrize(("ttl", "max_users"), [(0, 10), (-1, 10), (30, 0)])
def test_a_cache_that_holds_nothing_is_refused(ttl: float, max_users: int) -> None:
    with pytest.raises(ValueError, match="expected ttl_seconds > 0, max_users >= 1"):
        CachedAttributeStore(CountingStore(), ttl_seconds=ttl, max_users=max_users)


async def test_the_cache_is_bounded_in_bytes_not_only_in_users(
    backend: CountingStore, clock: ManualClock
) -> None:
    """A few big users take the room of many small ones: the oldest go first, and what the
    cache holds stays within its bytes whatever the users' sizes."""
    big = {"blob": "x" * 10_000}
    await fill(backend, {f"big-{i}": big for i in range(10)} | {"small": {"a": 1}})
    store = CachedAttributeStore(
        backend, ttl_seconds=TTL, max_users=1000, max_bytes=35_000, clock=clock
    )
    await store.get_many(["small"])
    for i in range(10):
        await store.get_many([f"big-{i}"])
        assert store.bytes <= 35_000
    backend.lookups.clear()
    await store.get_many(["big-9", "big-8", "big-7", "small", "big-0"])
    # The three newest big users fit (about 10 KB each); the small one, cached first, and
    # the oldest big ones were let go.
    assert backend.lookups == [["big-0", "small"]]
