"""The attributes follower over an in-memory topic: where it starts, when it has caught up, how
it waits for a failing store, what it does with bad records, partitions added later."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from structlog.testing import capture_logs

from consumer.attributes import AttributesUnavailable, MemoryAttributeStore
from consumer.attributes import follower as follower_module
from consumer.attributes.follower import AttributeFollower
from consumer.attributes.store import Applied, Update
from consumer.observer import AttributesApplied, AttributesProgress, Details, Observer

from .conftest import WaitUntil
from .fakes import Record

TOPIC = "users"


def record(partition: int, offset: int, key: bytes | None, value: bytes | None) -> Record:
    return Record(TOPIC, partition, offset, value, key=key, timestamp=1_000 + offset)


def user(partition: int, offset: int, name: str, attributes: Any) -> Record:
    value = None if attributes is None else orjson.dumps(attributes)
    return record(partition, offset, name.encode(), value)


class FakeTopic:
    """The consumer as the follower sees it, over per-partition lists of records. Like
    aiokafka, assigning anew forgets every position."""

    def __init__(self, logs: dict[int, list[Record]]) -> None:
        self.logs = logs
        self.positions: dict[TopicPartition, int] = {}
        self.assigned: list[TopicPartition] = []
        self.returned: list[tuple[int, int]] = []  # (partition, offset) of every record given
        self.stopped = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)
        self.positions = {}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.positions[partition] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.positions[tp] = 0

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp.partition]) for tp in partitions}

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.logs[partition.partition])

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.logs)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        budget = max_records or 10**9
        out: dict[TopicPartition, list[Any]] = {}
        for tp in self.assigned:
            at = self.positions[tp]
            taken = self.logs[tp.partition][at : at + budget]
            if taken:
                out[tp] = taken
                self.positions[tp] = at + len(taken)
                budget -= len(taken)
                self.returned += [(tp.partition, r.offset) for r in taken]
        if not out:
            await asyncio.sleep(timeout_ms / 1000)  # a fetch that found nothing new waits
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Seen(list[Details]):
    def __call__(self, details: Details) -> None:
        self.append(details)

    def applied(self) -> list[AttributesApplied]:
        return [d for d in self if isinstance(d, AttributesApplied)]

    def progress(self) -> list[AttributesProgress]:
        return [d for d in self if isinstance(d, AttributesProgress)]


def follower(
    topic: FakeTopic,
    store: Any,
    seen: Seen | None = None,
    forget: Any = None,
    clock: Clock | None = None,
    partitions: Any = None,
) -> AttributeFollower:
    async def numbers() -> list[int]:
        return sorted(topic.logs)

    return AttributeFollower(
        TOPIC,
        store,
        topic,
        partitions or numbers,
        max_value_bytes=1_000,
        forget=forget,
        observer=Observer([seen if seen is not None else Seen()]),
        clock=clock or Clock(),
    )


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 3) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.005)  # polling for a condition, with a deadline


async def caught_up(f: AttributeFollower, within: float = 3) -> bool:
    return await asyncio.wait_for(f.caught_up(asyncio.Event()), within)


async def test_it_starts_where_the_store_says_and_catches_up_to_the_end(
    wait_until: WaitUntil,
) -> None:
    store = MemoryAttributeStore()
    await store.apply(TOPIC, [Update("a", {"v": 1}, 0, 1, 0)], {0: 2})  # read before a restart
    topic = FakeTopic(
        {
            0: [user(0, 0, "a", {"v": 0}), user(0, 1, "a", {"v": 1}), user(0, 2, "a", {"v": 2})],
            1: [user(1, 0, "b", {"v": 0}), user(1, 1, "b", None), user(1, 2, "c", {})],
        }
    )
    seen = Seen()
    f = follower(topic, store, seen)
    f.start()
    try:
        assert await caught_up(f)
        assert sorted(topic.returned) == [(0, 2), (1, 0), (1, 1), (1, 2)]  # nothing twice
        assert await store.get_many(["a", "b", "c"]) == {"a": {"v": 2}, "c": {}}
        assert await store.positions(TOPIC) == {0: 3, 1: 3}
        await wait_until(lambda: seen.progress(), what="progress told")
        assert seen.progress()[0] == AttributesProgress(records=4, lag=0, caught_up=True)
    finally:
        await f.stop()
    assert topic.stopped


async def test_an_empty_topic_is_caught_up_at_once() -> None:
    f = follower(FakeTopic({0: [], 1: []}), MemoryAttributeStore())
    f.start()
    try:
        assert await caught_up(f)
    finally:
        await f.stop()


class HeldStore(MemoryAttributeStore):
    """Writes wait for `release`: a slow store."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.writing = asyncio.Event()

    async def apply(
        self, topic: str, updates: Sequence[Update], positions: Mapping[int, int]
    ) -> Applied:
        self.writing.set()
        await self.release.wait()
        return await super().apply(topic, updates, positions)


async def test_not_caught_up_before_every_record_there_at_start_is_written() -> None:
    store = HeldStore()
    f = follower(FakeTopic({0: [user(0, 0, "a", {"v": 1})]}), store)
    f.start()
    stop = asyncio.Event()
    waiting = asyncio.create_task(f.caught_up(stop))
    try:
        await asyncio.wait_for(store.writing.wait(), 3)
        assert not waiting.done()
        store.release.set()
        assert await asyncio.wait_for(waiting, 3)
        assert await store.get_many(["a"]) == {"a": {"v": 1}}
    finally:
        await f.stop()


async def test_a_stop_while_catching_up_ends_the_wait_with_false() -> None:
    store = HeldStore()
    f = follower(FakeTopic({0: [user(0, 0, "a", {"v": 1})]}), store)
    f.start()
    stop = asyncio.Event()
    waiting = asyncio.create_task(f.caught_up(stop))
    await asyncio.wait_for(store.writing.wait(), 3)
    stop.set()
    assert await asyncio.wait_for(waiting, 3) is False
    await f.stop()


class FailingStore(MemoryAttributeStore):
    """Unavailable for the first `failures` writes, then fine; or broken for good."""

    def __init__(self, failures: int = 0, bug: bool = False) -> None:
        super().__init__()
        self.failures = failures
        self.bug = bug
        self.tries = 0

    async def apply(
        self, topic: str, updates: Sequence[Update], positions: Mapping[int, int]
    ) -> Applied:
        self.tries += 1
        if self.bug:
            raise RuntimeError("a bug in the store")
        if self.tries <= self.failures:
            raise AttributesUnavailable("redis attribute store 'redis://x': Connection refused")
        return await super().apply(topic, updates, positions)


async def test_a_failing_store_is_waited_for_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(follower_module, "_BACKOFF", (0.001, 0.004))
    store = FailingStore(failures=3)
    f = follower(FakeTopic({0: [user(0, 0, "a", {"v": 1}), user(0, 1, "b", {"v": 2})]}), store)
    with capture_logs() as logs:
        f.start()
        try:
            assert await caught_up(f)
        finally:
            await f.stop()
    assert store.tries == 4  # the same batch, until the store took it
    assert await store.get_many(["a", "b"]) == {"a": {"v": 1}, "b": {"v": 2}}
    events = [line["event"] for line in logs if line["event"].startswith("attributes.store")]
    assert events == ["attributes.store_failing", "attributes.store_recovered"]  # once each


async def test_a_bug_in_the_store_ends_the_follower_and_says_so() -> None:
    f = follower(FakeTopic({0: [user(0, 0, "a", {"v": 1})]}), FailingStore(bug=True))
    f.start()
    with pytest.raises(RuntimeError, match="a bug in the store"):
        await caught_up(f)
    await f.stop()


async def test_bad_records_are_counted_and_logged_once_per_key() -> None:
    records = [
        record(0, 0, b"u-text", b"not json"),
        record(0, 1, b"u-text", b"still not json"),
        record(0, 2, b"u-list", b"[1]"),
        record(0, 3, b"u-ok", b'{"a": 1}'),
        record(0, 4, b"u-big", orjson.dumps({"x": "y" * 2_000})),  # over max_value_bytes
        record(0, 5, b"u-text", b"{"),
        record(0, 6, None, b"{}"),
    ]
    store = MemoryAttributeStore()
    seen = Seen()
    f = follower(FakeTopic({0: records}), store, seen)
    with capture_logs() as logs:
        f.start()
        try:
            assert await caught_up(f)
        finally:
            await f.stop()
    skipped: dict[str, int] = {}
    for applied in seen.applied():
        for reason, count in applied.skipped:
            skipped[reason] = skipped.get(reason, 0) + count
    assert skipped == {"not_json": 3, "not_an_object": 1, "too_large": 1, "bad_key": 1}
    lines = [(line["key"], line["reason"]) for line in logs if line["event"].endswith("skipped")]
    assert lines == [
        ("u-text", "not_json"),
        ("u-list", "not_an_object"),
        ("u-big", "too_large"),
        ("(none)", "bad_key"),
    ]
    assert await store.get_many(["u-ok"]) == {"u-ok": {"a": 1}}
    assert await store.positions(TOPIC) == {0: 7}


async def test_the_cache_is_told_every_user_written_or_not() -> None:
    store = MemoryAttributeStore()
    await store.apply(TOPIC, [Update("b", {"v": 9}, 0, 5, 0)], {})  # newer than the record
    told: list[str] = []
    topic = FakeTopic({0: [user(0, 0, "a", {"v": 1}), user(0, 1, "b", {"v": 1})]})
    f = follower(topic, store, forget=told.extend)
    f.start()
    try:
        assert await caught_up(f)
    finally:
        await f.stop()
    # b was superseded here, but another replica may have written it behind the cache.
    assert told == ["a", "b"]


async def test_a_topic_that_does_not_exist_yet_is_asked_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(follower_module, "TOPIC_RETRY_SECONDS", 0.001)
    asked = 0

    async def partitions() -> list[int]:
        nonlocal asked
        asked += 1
        if asked < 3:
            raise LookupError("topic 'users' does not exist (error 3)")
        return [0]

    store = MemoryAttributeStore()
    f = follower(FakeTopic({0: [user(0, 0, "a", {})]}), store, partitions=partitions)
    with capture_logs() as logs:
        f.start()
        try:
            assert await caught_up(f)
        finally:
            await f.stop()
    assert asked == 3
    assert [line["event"] for line in logs].count("attributes.topic_missing") == 1


async def test_partitions_added_later_are_read_and_the_others_keep_their_place() -> None:
    topic = FakeTopic({0: [user(0, 0, "a", {"v": 1})]})
    store = MemoryAttributeStore()
    clock = Clock()
    f = follower(topic, store, clock=clock)
    f.start()
    try:
        assert await caught_up(f)
        topic.logs[1] = [user(1, 0, "b", {"v": 1})]
        topic.logs[0].append(user(0, 1, "a", {"v": 2}))
        clock.now += follower_module.PARTITIONS_CHECK_SECONDS

        async def both() -> bool:
            return await store.get_many(["a", "b"]) == {"a": {"v": 2}, "b": {"v": 1}}

        await eventually(both)
        assert sorted(topic.returned) == [(0, 0), (0, 1), (1, 0)]  # partition 0 not re-read
    finally:
        await f.stop()


async def test_lag_is_the_records_behind_the_end_while_it_falls_behind() -> None:
    store = HeldStore()
    topic = FakeTopic({0: [user(0, i, f"u{i}", {}) for i in range(5)]})
    clock = Clock()
    seen = Seen()
    f = follower(topic, store, seen, clock=clock)
    f.start()
    try:
        await asyncio.wait_for(store.writing.wait(), 3)
        topic.logs[0] += [user(0, i, f"u{i}", {}) for i in range(5, 8)]  # more arrive
        clock.now += 10
        store.release.set()
        assert await caught_up(f)

        async def told() -> bool:
            return bool(seen.progress())

        await eventually(told)
        first = seen.progress()[0]
        assert (first.records, first.caught_up) == (5, True)
        assert first.lag == 3  # the records that came after the first fetch
    finally:
        await f.stop()
