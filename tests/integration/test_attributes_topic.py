"""The attributes follower on a real broker, into SQLite and into a real Redis: the latest value
wins, tombstones delete, a restart resumes without reading again, and replicas following into
one Redis never put an older value back, however slow one of them is."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from consumer.attributes.backends import open_backend
from consumer.attributes.follower import AttributeFollower, open_follower
from consumer.attributes.store import Applied, FollowedStore, Update
from consumer.config import ServiceConfig, parse_config
from consumer.observer import AttributesApplied, AttributesProgress, Details, Observer
from tests.support.polling import wait_until

from .support import create_topic, produce, read_all, run_cli

Users = Sequence[tuple[str, Mapping[str, Any] | None]]


def config_for(bootstrap: str, topic: str, attributes: dict[str, Any]) -> ServiceConfig:
    document = {
        "kafka": {"bootstrap_servers": bootstrap},
        "attributes": {**attributes, "topic": topic},
        "channels": [{"name": "unused", "url": "http://127.0.0.1:9/hooks"}],
        "allowed_networks": ["127.0.0.0/8"],  # check-config refuses a loopback URL otherwise
    }
    return parse_config(document, "test", {})


async def publish(bootstrap: str, topic: str, users: Users) -> None:
    await produce(
        bootstrap,
        topic,
        [(u.encode(), None if a is None else orjson.dumps(a)) for u, a in users],
    )


class Seen:
    """An observer hook keeping what the follower told."""

    def __init__(self) -> None:
        self.applied: list[AttributesApplied] = []
        self.progress: list[AttributesProgress] = []

    def __call__(self, details: Details) -> None:
        if isinstance(details, AttributesApplied):
            self.applied.append(details)
        elif isinstance(details, AttributesProgress):
            self.progress.append(details)

    def written(self) -> int:
        return sum(a.stored + a.deleted for a in self.applied)

    def superseded(self) -> int:
        return sum(a.superseded for a in self.applied)

    def read(self) -> int:
        skipped = sum(n for a in self.applied for _, n in a.skipped)
        return self.written() + self.superseded() + skipped


async def following(
    config: ServiceConfig, store: FollowedStore, seen: Seen | None = None
) -> AttributeFollower:
    follower = open_follower(config, store, observer=Observer([seen or Seen()]))
    assert follower is not None
    follower.start()
    assert await asyncio.wait_for(follower.caught_up(asyncio.Event()), 60)
    return follower


@pytest.fixture
def topic() -> str:
    return f"attributes-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", "redis"])
def attributes(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"backend": "sqlite", "url": f"sqlite:///{tmp_path}/attributes.db"}
    return {"backend": "redis", "url": redis_url, "key_prefix": redis_prefix}


async def test_the_latest_value_wins_and_a_tombstone_deletes(
    bootstrap: str, topic: str, attributes: dict[str, Any]
) -> None:
    await create_topic(bootstrap, topic, 3)
    await publish(
        bootstrap,
        topic,
        [
            ("u-1", {"hobby": "chess", "level": 1}),
            ("u-2", {"hobby": "go"}),
            ("u-1", {"hobby": "golf", "level": 2}),
            ("u-3", {}),
            ("u-2", None),
            ("u-1", {"hobby": "跑步", "tags": ["a", None], "level": 3}),
        ],
    )
    config = config_for(bootstrap, topic, attributes)
    store = open_backend(config.attributes)
    seen = Seen()
    follower = await following(config, store, seen)
    try:
        # Caught up means everything that was there at start is in the store.
        assert await store.get_many(["u-1", "u-2", "u-3"]) == {
            "u-1": {"hobby": "跑步", "tags": ["a", None], "level": 3},  # replaced, not merged
            "u-3": {},
        }
        assert seen.read() == 6
        # While following: more updates, the user deleted above comes back, then goes again.
        await publish(
            bootstrap,
            topic,
            [("u-2", {"hobby": "back"}), ("u-1", {"level": 4}), ("u-3", None), ("u-2", None)],
        )
        await publish(bootstrap, topic, [("u-2", {"hobby": "last"})])

        async def latest() -> bool:
            return await store.get_many(["u-1", "u-2", "u-3"]) == {
                "u-1": {"level": 4},
                "u-2": {"hobby": "last"},
            }

        await wait_until(latest, 20, "the latest values", every=0.05)
    finally:
        await follower.stop()
        await store.close()


async def test_bad_records_are_skipped_counted_and_never_stop_the_follower(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    await create_topic(bootstrap, topic, 1)
    await produce(
        bootstrap,
        topic,
        [
            (b"u-ok", b'{"a": 1}'),
            (b"u-text", b"not json"),
            (b"u-list", b"[1, 2]"),
            (None, b'{"no": "key"}'),
            (b"\xff\xfe", b'{"key": "not utf-8"}'),
            (b"u-big", orjson.dumps({"x": "y" * 70_000})),
            (b"u-deep", b"[" * 100 + b"]" * 100),
            (b"u-deep", b'{"a":' * 80 + b"1" + b"}" * 80),
            (b"u-last", b'{"b": 2}'),
        ],
    )
    config = config_for(bootstrap, topic, {"url": f"sqlite:///{tmp_path}/a.db"})
    store = open_backend(config.attributes)
    seen = Seen()
    follower = await following(config, store, seen)
    try:
        assert await store.get_many(["u-ok", "u-last", "u-text", "u-big", "u-deep"]) == {
            "u-ok": {"a": 1},
            "u-last": {"b": 2},
        }
        skipped: dict[str, int] = {}
        for applied in seen.applied:
            for reason, count in applied.skipped:
                skipped[reason] = skipped.get(reason, 0) + count
        # Nested 100 lists is not an object before it is too deep: not_an_object.
        assert skipped == {
            "not_json": 1,
            "not_an_object": 2,
            "bad_key": 2,
            "too_large": 1,
            "too_deep": 1,
        }
        # Skipped records move the position too: a restart does not read them again.
        assert await store.positions(topic) == {0: 9}
    finally:
        await follower.stop()
        await store.close()


async def test_a_restart_resumes_where_it_stopped_without_reading_again(
    bootstrap: str, topic: str, attributes: dict[str, Any]
) -> None:
    await create_topic(bootstrap, topic, 3)
    users = [(f"u-{i}", {"n": i}) for i in range(300)]
    await publish(bootstrap, topic, users)
    config = config_for(bootstrap, topic, attributes)
    store = open_backend(config.attributes)
    first = Seen()
    follower = await following(config, store, first)
    await follower.stop()
    await store.close()
    assert first.read() == 300
    positions = sum((await _positions(config)).values())
    assert positions == 300

    await publish(bootstrap, topic, [("u-7", {"n": "new"}), ("u-1000", {"n": 1000})])
    store = open_backend(config.attributes)
    again = Seen()
    follower = await following(config, store, again)
    try:
        # Exactly the two records published while it was stopped: nothing read twice.
        assert again.read() == 2
        found = await store.get_many(["u-7", "u-1000", "u-299"])
        assert found == {"u-7": {"n": "new"}, "u-1000": {"n": 1000}, "u-299": {"n": 299}}
    finally:
        await follower.stop()
        await store.close()


async def _positions(config: ServiceConfig) -> dict[int, int]:
    store = open_backend(config.attributes)
    try:
        assert config.attributes.topic is not None
        return await store.positions(config.attributes.topic)
    finally:
        await store.close()


class HeldStore:
    """A store whose writes wait until the test lets them go: a replica far behind."""

    def __init__(self, store: FollowedStore) -> None:
        self._store = store
        self.release = asyncio.Event()
        self.waiting: list[Sequence[Update]] = []
        self.applied: list[Applied] = []

    async def get_many(self, user_ids: Any) -> dict[str, dict[str, Any]]:
        return await self._store.get_many(user_ids)

    async def put_many(self, items: Any) -> None:
        await self._store.put_many(items)

    async def positions(self, topic: str) -> dict[int, int]:
        return await self._store.positions(topic)

    async def apply(
        self, topic: str, updates: Sequence[Update], positions: Mapping[int, int]
    ) -> Applied:
        self.waiting.append(updates)
        await self.release.wait()
        applied = await self._store.apply(topic, updates, positions)
        self.applied.append(applied)
        return applied

    async def close(self) -> None:
        await self._store.close()


async def test_two_replicas_into_one_redis_never_regress_a_value(
    bootstrap: str, topic: str, redis_url: str, redis_prefix: str
) -> None:
    await create_topic(bootstrap, topic, 1)  # one fetch reads the first wave whole
    config = config_for(
        bootstrap, topic, {"backend": "redis", "url": redis_url, "key_prefix": redis_prefix}
    )
    first_wave = [("u-counter", {"seq": i}) for i in range(1, 51)] + [("u-gone", {"seq": 1})]
    second_wave = [("u-counter", {"seq": i}) for i in range(51, 101)] + [("u-gone", None)]
    await publish(bootstrap, topic, first_wave)
    # The slow replica reads the first wave and is held before writing any of it.
    slow_store = HeldStore(open_backend(config.attributes))
    slow = open_follower(config, slow_store)
    assert slow is not None
    slow.start()
    fast_store = open_backend(config.attributes)
    observed: list[tuple[int, bool]] = []  # (u-counter's seq, whether u-gone was found)
    finished_at: list[int] = []  # where `observed` was when the fast replica had written all

    async def sample_once() -> None:
        found = await fast_store.get_many(["u-counter", "u-gone"])
        if "u-counter" in found:
            observed.append((found["u-counter"]["seq"], "u-gone" in found))

    async def sample() -> None:
        while True:
            await sample_once()
            await asyncio.sleep(0.005)  # sampling what readers see, while the test runs

    sampler = asyncio.create_task(sample())
    fast = None
    try:
        await wait_until(lambda: bool(slow_store.waiting), 20, "the slow replica read records")
        fast = await following(config, fast_store)
        await publish(bootstrap, topic, second_wave)

        async def fast_done() -> bool:
            found = await fast_store.get_many(["u-counter", "u-gone"])
            return found == {"u-counter": {"seq": 100}}

        await wait_until(fast_done, 20, "the fast replica wrote the latest values", every=0.05)
        finished_at.append(len(observed))
        # The slow replica now writes the first wave it read long ago, then the second.
        slow_store.release.set()

        def wrote_all() -> bool:
            read = sum(len(updates) for updates in slow_store.waiting)
            return read == 102 and len(slow_store.applied) == len(slow_store.waiting)

        await wait_until(wrote_all, 20, "the slow replica wrote every record it read")
        await sample_once()  # the last word: all of it may have taken less than one interval
        assert await fast_store.get_many(["u-counter", "u-gone"]) == {"u-counter": {"seq": 100}}
        # Every value it had was older than (or the same as) the one stored: none written.
        assert sum(a.stored + a.deleted for a in slow_store.applied) == 0
        assert sum(a.superseded for a in slow_store.applied) == 102
        assert await slow_store.positions(topic) == {0: 102}
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        slow_store.release.set()  # after a failed wait too: a held write would block the stop
        await slow.stop()
        if fast is not None:
            await fast.stop()
        await slow_store.close()
        await fast_store.close()
    seqs = [seq for seq, _ in observed]
    assert seqs, "the sampler saw nothing"
    assert seqs == sorted(seqs), "a reader saw a value go back"
    assert seqs[-1] == 100
    assert not any(gone for _, gone in observed[finished_at[0] :]), "a deleted user came back"


async def test_attributes_publish_writes_the_file_to_the_topic(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    lines = [
        '{"user_id": "u-1", "attributes": {"hobby": "跑步", "level": 3}}',
        '{"user_id": "u-2", "attributes": null}',
        "",
        '{"user_id": "u-3"}',
        "not json",
        '{"user_id": "u-4", "attributes": {}}',
    ]
    users = tmp_path / "users.jsonl"
    users.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    document = {
        "kafka": {"bootstrap_servers": bootstrap, "topic_partitions": 2},
        "attributes": {"url": f"sqlite:///{tmp_path}/a.db", "topic": topic},
        "channels": [{"name": "unused", "url": "http://127.0.0.1:9/hooks"}],
        "allowed_networks": ["127.0.0.0/8"],  # check-config refuses a loopback URL otherwise
    }
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    code, out, err = await run_cli(
        "attributes", "publish", "--config", str(config), str(users), env={}
    )
    assert code == 1, err  # some lines were rejected
    assert f"published 3 users to {topic} (1 deletions), rejected 2 lines" in out
    assert "line 4: attributes missing or not a JSON object or null" in err
    assert "line 5: invalid JSON" in err
    records = await read_all(bootstrap, topic)
    assert sorted((r.key, r.value) for r in records) == [
        (b"u-1", orjson.dumps({"hobby": "跑步", "level": 3})),
        (b"u-2", None),
        (b"u-4", b"{}"),
    ]
    described = await _topic_config(bootstrap, topic)
    assert described["cleanup.policy"] == "compact"  # created as a table topic


async def test_attributes_publish_without_a_topic_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    document = {
        "attributes": {"url": f"sqlite:///{tmp_path}/a.db"},
        "channels": [{"name": "unused", "url": "http://127.0.0.1:9/hooks"}],
        "allowed_networks": ["127.0.0.0/8"],  # check-config refuses a loopback URL otherwise
    }
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    users = tmp_path / "users.jsonl"
    users.write_text('{"user_id": "u-1", "attributes": {}}\n', encoding="utf-8")
    code, _, err = await run_cli(
        "attributes", "publish", "--config", str(config), str(users), env={}
    )
    assert code == 2
    assert f"{config}: attributes.topic: required by attributes publish, got none" in err


async def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [(_error, _message, _type, _name, entries)] = response.resources
    return {entry[0]: entry[1] for entry in entries}
