"""The Redis attribute store against bad data and big users, on a real redis-server: a corrupt
user is one user not found (counted, logged once), never a failed lookup for the others; a
lookup fetches only the attributes the channels send; an import never holds Redis for long."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from consumer.attributes.redis import RedisAttributeStore
from consumer.hooks.logs import TransitionLog
from consumer.hooks.prometheus import PrometheusHook
from consumer.observer import AttributesCorrupt, Details, Observer

from .fleet import private_redis


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(raw: Redis) -> AsyncIterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    keys = [key async for key in raw.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await raw.delete(*keys)


@pytest.mark.parametrize("fields", [None, {"hobby", "tier"}], ids=["every field", "sent fields"])
async def test_a_corrupt_user_is_not_found_and_the_others_are_unaffected(
    redis_url: str, raw: Redis, prefix: str, fields: set[str] | None
) -> None:
    seen: list[Details] = []
    metrics = PrometheusHook([])
    observer = Observer([seen.append, metrics, TransitionLog(debug=False)])
    store = RedisAttributeStore(
        redis_url,
        key_prefix=prefix,
        timeout_seconds=3,
        fields=None if fields is None else (lambda: fields),
        observer=observer,
    )
    try:
        good = [(f"u-{i}", {"hobby": "chess", "tier": i}) for i in range(998)]
        await store.put_many(good)
        await raw.set(f"{prefix}typed", "a string, not a hash")  # another program's key
        await raw.hset(f"{prefix}garbled", mapping={"hobby": b"not json", "tier": b"1"})
        users = ["typed", *(u for u, _ in good[:500]), "garbled", *(u for u, _ in good[500:])]
        with capture_logs() as logs:
            found = await store.get_many(users)
            again = await store.get_many(users)
    finally:
        await store.close()
    assert found == again == dict(good)  # 998 users found, two sent as not found
    corrupt = [d for d in seen if isinstance(d, AttributesCorrupt)]
    assert [(d.key, d.first) for d in corrupt] == [
        (f"{prefix}typed", True),
        (f"{prefix}garbled", True),
        (f"{prefix}typed", False),
        (f"{prefix}garbled", False),
    ]
    assert "not JSON" in corrupt[1].reason
    assert "not json" not in repr(corrupt)  # what is wrong, never the value
    lines = [line for line in logs if line["event"] == "attributes.corrupt"]
    assert [line["key"] for line in lines] == [f"{prefix}typed", f"{prefix}garbled"]  # once
    assert b"webhook_consumer_attributes_corrupt_total 4.0" in metrics.exposition()


async def test_a_lookup_fetches_only_the_attributes_the_channels_send(
    redis_url: str, prefix: str
) -> None:
    sent = {"hobby"}
    store = RedisAttributeStore(
        redis_url, key_prefix=prefix, timeout_seconds=3, fields=lambda: sent
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
        raw = Redis.from_url(redis.url)
        try:
            users = [(f"u-{i}", {"blob": "x" * 20_000}) for i in range(1000)]
            await store.put_many(users)
            stats = await raw.info("commandstats")
            transactions = stats["cmdstat_exec"]["calls"]
            assert await raw.dbsize() == 1000
        finally:
            await store.close()
            await raw.aclose()
    # About 20 MB (1,000 x 20,009 bytes of JSON) in transactions of at most 512 KiB: 39 at
    # least, and not many more (each but the last is nearly full).
    least = math.ceil(1000 * 20_009 / (512 * 1024))
    assert least <= transactions <= least + 2
