"""The Redis attribute store against a real redis-server: layout, types, round trips, failures."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from consumer.attributes import AttributesUnavailable, open_store
from consumer.attributes.redis import RedisAttributeStore
from consumer.config import AttributesConfig
from consumer.hooks.logs import TransitionLog
from consumer.hooks.prometheus import PrometheusHook
from consumer.observer import AttributesCorrupt, Details, Observer, RedisChanged
from consumer.redis_health import RedisHealth
from tests.support.ports import free_port

from .fleet import private_redis

NESTED = {
    "name": "Zoë 王 🚀",
    "tags": ["ä", "ß", None, True, 1.5],
    "address": {"city": "Zürich", "geo": {"lat": 47.37, "lon": 8.54}},
    "count": 2**53,
    "zero": 0,
    "off": False,
    "nothing": None,
    "number_as_text": "123",
    "": "an empty attribute name",
}


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisAttributeStore]:
    s = RedisAttributeStore(redis_url, key_prefix=redis_prefix, timeout_seconds=3)
    yield s
    await s.close()


async def test_a_cancelled_lookup_ends_and_leaves_the_store_usable(
    store: RedisAttributeStore,
) -> None:
    """A drain, a revoke or a timeout cancels lookups in flight: each must end then, and the
    next lookup must read its own replies. On Python 3.11 redis-py's `wait_for` around a write
    drops a cancel that meets the reply; `raise_if_cancelled` stops the task anyway (without it,
    a third of these tasks ran on with redis-py 8.2)."""
    await store.put_many([("u1", {"v": 1}), ("u2", {"v": 2})])
    rng = random.Random(7)

    async def looking_up() -> None:
        while True:
            assert await store.get_many(["u1", "u2"]) == {"u1": {"v": 1}, "u2": {"v": 2}}
            await asyncio.sleep(0)

    for _ in range(300):
        task = asyncio.create_task(looking_up())
        # Cancelled anywhere in a lookup: before, while or after the pipeline's round trip.
        for _ in range(rng.randrange(1, 40)):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done, "a cancelled lookup kept running"
        assert task.cancelled(), task.exception()
    assert await store.get_many(["u1", "u2", "u3"]) == {"u1": {"v": 1}, "u2": {"v": 2}}


async def test_types_round_trip(store: RedisAttributeStore) -> None:
    await store.put_many([("u1", NESTED), ("ユーザー", {"k": "v"}), ("bare", {})])
    got = await store.get_many(["u1", "ユーザー", "bare", "absent"])
    assert got == {"u1": NESTED, "ユーザー": {"k": "v"}, "bare": {}}
    assert type(got["u1"]["count"]) is int
    assert type(got["u1"]["tags"][4]) is float


async def test_one_hash_per_user_with_json_values(
    store: RedisAttributeStore, redis_client: Redis, redis_prefix: str
) -> None:
    await store.put_many([("u-10086", {"hobby": "跑步", "level": 7, "vip": True})])
    assert await redis_client.type(f"{redis_prefix}u-10086") == b"hash"
    assert await redis_client.hgetall(f"{redis_prefix}u-10086") == {
        b"hobby": '"跑步"'.encode(),
        b"level": b"7",
        b"vip": b"true",
    }


async def test_a_write_replaces_a_users_attributes(
    store: RedisAttributeStore, redis_client: Redis, redis_prefix: str
) -> None:
    await store.put_many([("u1", {"a": 1, "b": 2}), ("u2", {"keep": True})])
    await store.put_many([("u1", {"c": 3})])
    assert await store.get_many(["u1", "u2"]) == {"u1": {"c": 3}, "u2": {"keep": True}}
    assert await redis_client.hkeys(f"{redis_prefix}u1") == [b"c"]
    await store.put_many([("u1", {})])  # a user with no attributes is still found
    assert await store.get_many(["u1"]) == {"u1": {}}


async def test_the_last_write_of_a_user_in_one_batch_wins(store: RedisAttributeStore) -> None:
    await store.put_many([("u1", {"v": 1}), ("u2", {"v": 1}), ("u1", {"v": 2})])
    assert await store.get_many(["u1", "u2"]) == {"u1": {"v": 2}, "u2": {"v": 1}}


async def test_a_batch_with_a_value_that_is_not_json_writes_nothing(
    store: RedisAttributeStore,
) -> None:
    await store.put_many([("ok", {"a": 1})])
    with pytest.raises(TypeError):
        await store.put_many([("ok", {"a": 2}), ("bad", {"a": object()})])
    assert await store.get_many(["ok", "bad"]) == {"ok": {"a": 1}}


async def test_empty_inputs(store: RedisAttributeStore) -> None:
    await store.put_many([])
    assert await store.get_many([]) == {}


async def _counters(redis_client: Redis) -> dict[str, int]:
    """Server-side counts: socket reads, and calls per command."""
    stats = await redis_client.info("stats")
    commands = await redis_client.info("commandstats")
    counts = {f"cmd:{name.removeprefix('cmdstat_')}": v["calls"] for name, v in commands.items()}
    return {"reads": stats["total_reads_processed"], **counts}


def _delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


async def test_many_users_take_few_round_trips(
    store: RedisAttributeStore, redis_client: Redis
) -> None:
    users = [f"user-{i}" for i in range(2500)]
    await store.get_many(["warm-up"])  # the connection and its handshake are not counted

    before = await _counters(redis_client)
    await store.put_many([(u, {"i": i, "hobby": "chess"}) for i, u in enumerate(users)])
    after = await _counters(redis_client)
    # One MULTI/EXEC transaction per 1000 users, each user replaced by DEL + HSET.
    assert _delta(before, after, "cmd:multi") == 3
    assert _delta(before, after, "cmd:exec") == 3
    assert _delta(before, after, "cmd:del") == 2500
    assert _delta(before, after, "cmd:hset") == 2500
    # A command per round trip would be 5000 reads; pipelined, the server reads them in bulk.
    assert _delta(before, after, "reads") <= 100, after

    before = await _counters(redis_client)
    found = await store.get_many([*users, "absent"])
    after = await _counters(redis_client)
    assert found == {u: {"i": i, "hobby": "chess"} for i, u in enumerate(users)}
    assert _delta(before, after, "cmd:hgetall") == 2501
    assert _delta(before, after, "reads") <= 50, after


async def test_a_unix_socket_url(redis_client: Redis, redis_prefix: str) -> None:
    path = (await redis_client.config_get("unixsocket")).get("unixsocket")
    if not path:
        pytest.skip("this Redis listens on no unix socket (deploy/local/redis does)")
    store = RedisAttributeStore(f"unix://{path}?db=0", key_prefix=redis_prefix, timeout_seconds=3)
    try:
        await store.put_many([("u1", {"via": "unix"})])
        assert await store.get_many(["u1"]) == {"u1": {"via": "unix"}}
    finally:
        await store.close()


async def test_a_store_that_is_down_is_unavailable_and_the_password_stays_out(
    redis_prefix: str,
) -> None:
    port = free_port()
    url = f"redis://:s3cret-redis-password@127.0.0.1:{port}/0"
    store = RedisAttributeStore(url, key_prefix=redis_prefix, timeout_seconds=3)
    try:
        for attempt in (
            lambda: store.get_many(["u1"]),
            lambda: store.put_many([("u1", {"a": 1})]),
        ):
            with pytest.raises(AttributesUnavailable) as caught:
                await attempt()
            message = str(caught.value)
            assert message.startswith(f"redis attribute store 'redis://***@127.0.0.1:{port}/0': ")
            assert f"connecting to 127.0.0.1:{port}" in message
            assert "s3cret-redis-password" not in message
    finally:
        await store.close()


async def test_a_store_that_does_not_answer_times_out_as_unavailable(redis_prefix: str) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisAttributeStore(
        f"redis://127.0.0.1:{port}/0", key_prefix=redis_prefix, timeout_seconds=0.3
    )
    try:
        with pytest.raises(AttributesUnavailable, match=r"[Tt]imeout"):
            await store.get_many(["u1"])
        assert accepted
    finally:
        await store.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def _with_user(redis_url: str, redis_client: Redis, password: str, rules: list[str]) -> str:
    """A URL of `redis_url`'s server, logging in as a new user with these ACL rules."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    await redis_client.execute_command(
        "ACL", "SETUSER", name, "reset", "on", f">{password}", *rules
    )
    parts = urlsplit(redis_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{name}:{password}@{host}").geturl()


async def _drop_user(redis_client: Redis, url: str) -> None:
    await redis_client.execute_command("ACL", "DELUSER", urlsplit(url).username)


async def test_a_refused_write_is_unavailable(
    redis_url: str, redis_client: Redis, redis_prefix: str
) -> None:
    # A read-only account answers writes with an error, as a READONLY replica does.
    password = f"pw-{uuid.uuid4().hex}"
    url = await _with_user(redis_url, redis_client, password, ["~*", "+@read", "+@connection"])
    store = RedisAttributeStore(url, key_prefix=redis_prefix, timeout_seconds=3)
    try:
        assert await store.get_many(["u1"]) == {}
        with pytest.raises(AttributesUnavailable, match="permission") as caught:
            await store.put_many([("u1", {"a": 1})])
        assert password not in str(caught.value)
    finally:
        await store.close()
        await _drop_user(redis_client, url)


async def test_a_wrong_password_is_unavailable(
    redis_url: str, redis_client: Redis, redis_prefix: str
) -> None:
    url = await _with_user(redis_url, redis_client, "the-right-password", ["~*", "+@all"])
    wrong = url.replace("the-right-password", "not-the-password-at-all")
    store = RedisAttributeStore(wrong, key_prefix=redis_prefix, timeout_seconds=3)
    try:
        with pytest.raises(AttributesUnavailable) as caught:
            await store.get_many(["u1"])
        assert "not-the-password-at-all" not in str(caught.value)
        assert "//***@" in str(caught.value)
    finally:
        await store.close()
        await _drop_user(redis_client, url)


async def test_the_password_from_the_environment_logs_in(
    redis_url: str, redis_client: Redis, redis_prefix: str
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    with_password = await _with_user(redis_url, redis_client, password, ["~*", "+@all"])
    parts = urlsplit(with_password)
    without = parts._replace(netloc=parts.netloc.replace(f":{password}@", "@")).geturl()
    config = AttributesConfig(
        backend="redis",
        url=without,
        key_prefix=redis_prefix,
        password_env="ATTRIBUTES_REDIS_PASSWORD",
        cache_ttl_seconds=0,
    )
    try:
        store = open_store(config, {"ATTRIBUTES_REDIS_PASSWORD": password})
        try:
            await store.put_many([("u1", {"a": 1})])
            assert await store.get_many(["u1"]) == {"u1": {"a": 1}}
        finally:
            await store.close()
        wrong = open_store(config, {"ATTRIBUTES_REDIS_PASSWORD": "not-the-password"})
        try:
            with pytest.raises(AttributesUnavailable) as caught:
                await wrong.get_many(["u1"])
            assert "not-the-password" not in str(caught.value)
        finally:
            await wrong.close()
    finally:
        await _drop_user(redis_client, with_password)


async def test_the_store_tells_redis_health_when_redis_stops_and_starts_answering(
    redis_url: str, redis_prefix: str
) -> None:
    seen: list[Details] = []
    health = RedisHealth(Observer([seen.append]))
    down = RedisAttributeStore(
        f"redis://127.0.0.1:{free_port()}/0",
        key_prefix=redis_prefix,
        timeout_seconds=3,
        health=health,
    )
    up = RedisAttributeStore(redis_url, key_prefix=redis_prefix, timeout_seconds=3, health=health)
    try:
        await up.get_many(["u1"])
        await up.get_many(["u2"])  # no change, nothing said
        with pytest.raises(AttributesUnavailable):
            await down.get_many(["u1"])
        with pytest.raises(AttributesUnavailable):
            await down.put_many([("u1", {})])
        await up.put_many([("u1", {"a": 1})])
    finally:
        await down.close()
        await up.close()
    assert [(d.available, bool(d.error)) for d in seen if isinstance(d, RedisChanged)] == [
        (True, False),
        (False, True),
        (True, False),
    ]
    assert health.available is True


# Bad data and big users: a corrupt user is one user not found, never a failed lookup


@pytest.mark.parametrize("fields", [None, {"hobby", "tier"}], ids=["every field", "sent fields"])
async def test_a_corrupt_user_is_not_found_and_the_others_are_unaffected(
    redis_url: str, redis_client: Redis, redis_prefix: str, fields: set[str] | None
) -> None:
    seen: list[Details] = []
    metrics = PrometheusHook([])
    observer = Observer([seen.append, metrics, TransitionLog(debug=False)])
    store = RedisAttributeStore(
        redis_url,
        key_prefix=redis_prefix,
        timeout_seconds=3,
        fields=None if fields is None else (lambda: fields),
        observer=observer,
    )
    try:
        good = [(f"u-{i}", {"hobby": "chess", "tier": i}) for i in range(998)]
        await store.put_many(good)
        await redis_client.set(
            f"{redis_prefix}typed", "a string, not a hash"
        )  # another program's key
        await redis_client.hset(
            f"{redis_prefix}garbled", mapping={"hobby": b"not json", "tier": b"1"}
        )
        users = ["typed", *(u for u, _ in good[:500]), "garbled", *(u for u, _ in good[500:])]
        with capture_logs() as logs:
            found = await store.get_many(users)
            again = await store.get_many(users)
    finally:
        await store.close()
    assert found == again == dict(good)  # 998 users found, two sent as not found
    corrupt = [d for d in seen if isinstance(d, AttributesCorrupt)]
    assert [(d.key, d.first) for d in corrupt] == [
        (f"{redis_prefix}typed", True),
        (f"{redis_prefix}garbled", True),
        (f"{redis_prefix}typed", False),
        (f"{redis_prefix}garbled", False),
    ]
    assert "not JSON" in corrupt[1].reason
    assert "not json" not in repr(corrupt)  # what is wrong, never the value
    lines = [line for line in logs if line["event"] == "attributes.corrupt"]
    assert [line["key"] for line in lines] == [
        f"{redis_prefix}typed",
        f"{redis_prefix}garbled",
    ]  # once
    assert b"webhook_consumer_attributes_corrupt_total 4.0" in metrics.exposition()


async def test_a_lookup_fetches_only_the_attributes_the_channels_send(
    redis_url: str, redis_prefix: str
) -> None:
    sent = {"hobby"}
    store = RedisAttributeStore(
        redis_url, key_prefix=redis_prefix, timeout_seconds=3, fields=lambda: sent
    )
    try:
        await store.put_many(
            [
                ("u1", {"hobby": "chess", "history": ["x" * 1000] * 100}),
                ("u2", {"history": []}),  # found, with none of the attributes sent
                ("u3", {}),  # found, with no attributes at all
            ]
        )
        assert await store.get_many(["u1", "u2", "u3", "absent"]) == {
            "u1": {"hobby": "chess"},
            "u2": {},
            "u3": {},
        }
        sent.add("history")  # a reload: a channel now sends it too
        assert (await store.get_many(["u2"]))["u2"] == {"history": []}
    finally:
        await store.close()


async def test_an_import_of_big_users_goes_in_small_transactions(tmp_path: Path) -> None:
    """1,000 users of 20 KB each would be one 20 MB MULTI/EXEC, holding the Redis every limit
    of the fleet shares; in transactions of about 512 KB, nothing waits behind one for long."""
    with private_redis(tmp_path / "redis") as redis:  # its counters are this test's alone
        store = RedisAttributeStore(redis.url, key_prefix="a:", timeout_seconds=10)
        private = Redis.from_url(redis.url)
        try:
            users = [(f"u-{i}", {"blob": "x" * 20_000}) for i in range(1000)]
            await store.put_many(users)
            stats = await private.info("commandstats")
            transactions = stats["cmdstat_exec"]["calls"]
            assert await private.dbsize() == 1000
        finally:
            await store.close()
            await private.aclose()
    # About 20 MB (1,000 x 20,009 bytes of JSON) in transactions of at most 512 KiB: 39 at
    # least, and not many more (each but the last is nearly full).
    least = math.ceil(1000 * 20_009 / (512 * 1024))
    assert least <= transactions <= least + 2
