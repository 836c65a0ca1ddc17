"""`run` with `attributes.topic`: nothing is delivered and /readyz says 503 until the topic is
read to its end, webhooks carry the latest values, and an update reaches the very next
delivery of its user although that user's old value sits in the lookup cache."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from consumer.attributes import SqliteAttributeStore
from consumer.receiver import Receiver
from tests import catalogue
from tests.catalogue import value
from tests.support.polling import wait_until

from .admin_port import get
from .support import (
    Setup,
    StartService,
    channel,
    create_topic,
    encoded,
    event,
    group_state,
    produce,
)


@dataclass
class FollowingSetup(Setup):
    attributes_topic: str = ""

    @property
    def attributes(self) -> dict[str, Any]:
        # A short timeout: a locked database is retried quickly.
        return {**super().attributes, "topic": self.attributes_topic, "timeout_seconds": 0.2}


def stored_hobby(db: Path, user: str) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT attributes FROM user_attributes WHERE user_id = ?", (user,)
        ).fetchone()
    return None if row is None else orjson.loads(row[0]).get("hobby")


async def test_deliveries_wait_for_the_topic_then_carry_its_latest_values(
    bootstrap: str,
    receiver: Receiver,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    running_service: StartService,
) -> None:
    setup = FollowingSetup(
        bootstrap,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        tmp=str(tmp_path),
        attributes_topic=f"attributes-{uuid.uuid4().hex[:10]}",
    )
    db = tmp_path / "attrs.db"
    await SqliteAttributeStore(db).close()  # the file exists, in WAL mode, before the lock
    await create_topic(bootstrap, setup.attributes_topic, 3)
    users = [(f"u-{i}", {"hobby": f"h{i}"}) for i in range(2_000)]
    updates = [("u-7", {"hobby": "h7b"}), ("u-7", {"hobby": "latest"}), ("u-9", None)]
    await produce(
        bootstrap,
        setup.attributes_topic,
        [(u.encode(), None if a is None else orjson.dumps(a)) for u, a in users + updates],
    )
    await create_topic(bootstrap, setup.topic, 3)
    first = [event("c", f"u-{i}") for i in (*range(0, 2_000, 40), 7, 9)]
    await produce(bootstrap, setup.topic, encoded(first))

    # Another writer holds the database: the follower cannot write, so it cannot catch up.
    lock = sqlite3.connect(db, timeout=0, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    service = running_service(setup.config(), setup.environ)
    admin = await service.admin_url()
    # The test broker rebalances at once: a service that joined its group before catching
    # up would have a member and deliveries within a second. Three seconds of neither.
    loop = asyncio.get_running_loop()
    watched_until = loop.time() + 3
    while loop.time() < watched_until:
        status, body = await get(http, f"{admin}/readyz")
        assert status == 503, body
        assert "the attributes topic read to its end" in body
        assert (await group_state(bootstrap, setup.group))[1] == 0  # no member
        assert receiver.received == []
        # Watching for three seconds that nothing happens: there is no event to wait for.
        await asyncio.sleep(0.1)
    lock.execute("ROLLBACK")
    lock.close()

    assert await receiver.wait_for(lambda r: len(r.delivered()) >= len(first), within=60)
    status, body = await get(http, f"{admin}/readyz")
    assert status == 200, body
    by_user = {r.body_event_user: r.body["userAttr"] for r in _with_users(receiver, first)}
    expected = {user: [attributes] for user, attributes in users}
    expected |= {"u-7": [{"hobby": "latest"}], "u-9": []}  # u-9 deleted by its tombstone
    assert by_user == {e["user_id"]: expected[e["user_id"]] for e in first}
    _, page = await get(http, f"{admin}/")
    assert 'id="attributes-state">caught up<' in page
    _, metrics = await get(http, f"{admin}/metrics")
    assert "webhook_consumer_attributes_caught_up 1.0" in metrics
    assert set(catalogue.metrics()) >= catalogue.FOLLOWER_METRICS
    assert catalogue.exported_metrics(metrics) >= catalogue.FOLLOWER_METRICS
    records = "webhook_consumer_attribute_records_total"
    counted = {r: value(metrics, records, result=r) for r in ("stored", "deleted")}
    counted["superseded"] = value(metrics, records, result="superseded")
    # Every record read is counted once; how many were superseded within a batch (u-7's
    # first two, u-9's value) depends on how the fetches cut the topic.
    assert sum(v or 0 for v in counted.values()) == len(users) + len(updates)
    assert counted["deleted"] == 1

    # u-40's attributes are cached now (30 s). An update must reach its next delivery.
    await produce(
        bootstrap, setup.attributes_topic, [(b"u-40", orjson.dumps({"hobby": "changed"}))]
    )
    await wait_until(
        lambda: stored_hobby(db, "u-40") == "changed",
        20,
        "the update reached the store",
        every=0.05,
    )
    second = event("c", "u-40")
    await produce(bootstrap, setup.topic, encoded([second]))
    assert await receiver.wait_for(lambda r: len(r.delivered()) >= len(first) + 1, within=30)
    [latest] = [r for r in _with_users(receiver, [second])]
    assert latest.body["userAttr"] == [{"hobby": "changed"}]
    await service.shutdown()
    sent = [r.delivery_id for r in receiver.delivered()]
    assert len(sent) == len(set(sent)) == len(first) + 1  # each (event, channel) exactly once


class _Delivered:
    def __init__(self, body: dict[str, Any], user: str) -> None:
        self.body = body
        self.body_event_user = user


def _with_users(receiver: Receiver, events: list[dict[str, Any]]) -> list[_Delivered]:
    """The delivered webhooks of these events, each with its event's user."""
    from consumer.delivery import delivery_id

    users = {delivery_id("a", [e["event_id"]]): e["user_id"] for e in events}
    return [
        _Delivered(r.body, users[r.delivery_id])
        for r in receiver.delivered()
        if r.delivery_id in users
    ]
