"""Attributes in Redis through the commands an operator runs: import, send-test, run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from consumer.attributes import open_store
from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.ports import free_port

from .support import (
    Setup,
    StartService,
    channel,
    create_topic,
    encoded,
    event,
    pairs_delivered,
    produce,
    run_cli,
    write_config,
)

MakeSetup = Callable[..., Setup]


@pytest.fixture
async def redis_setup(
    redis_url: str, receiver: Receiver, tmp_path: Path
) -> AsyncIterator[MakeSetup]:
    """Setups whose attributes live in Redis; their keys are removed afterwards."""
    made: list[Setup] = []

    def make(bootstrap: str = "127.0.0.1:1", **overrides: object) -> Setup:
        hobbies = channel(receiver, "hobbies", user_attributes=["hobby", "level"])
        setup = Setup(
            bootstrap,
            receiver,
            [hobbies],
            {"c": ["hobbies"]},
            tmp=str(tmp_path),
            **{"redis_url": redis_url, **overrides},  # type: ignore[arg-type]
        )
        made.append(setup)
        return setup

    yield make
    client = Redis.from_url(redis_url)
    for setup in made:
        keys = [k async for k in client.scan_iter(match=f"{setup.attributes['key_prefix']}*")]
        if keys:
            await client.delete(*keys)
    await client.aclose()


def _users_file(folder: Path, count: int) -> Path:
    path = folder / "users.jsonl"
    lines = (
        orjson.dumps({"user_id": f"u-{i}", "attributes": {"hobby": f"跑步 {i}", "level": i}})
        for i in range(count)
    )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


async def test_import_then_send_test_take_attributes_from_redis(
    redis_setup: MakeSetup, receiver: Receiver, tmp_path: Path
) -> None:
    setup = redis_setup()
    config = write_config(setup, tmp_path)
    code, out, err = await run_cli(
        "attributes",
        "import",
        "--config",
        str(config),
        str(_users_file(tmp_path, 2500)),
        env=setup.environ,
    )
    assert code == 0, out + err
    assert "imported 2500 users, rejected 0 lines" in out
    store = open_store(setup.config().attributes)
    try:
        got = await store.get_many(["u-0", "u-2499", "u-2500"])
    finally:
        await store.close()
    assert got == {
        "u-0": {"hobby": "跑步 0", "level": 0},
        "u-2499": {"hobby": "跑步 2499", "level": 2499},
    }

    code, out, err = await run_cli(
        "send-test",
        "--config",
        str(config),
        "hobbies",
        "--user",
        "u-7",
        "--user",
        "nobody",
        env=setup.environ,
    )
    assert code == 0, out + err
    [request] = receiver.received
    assert request.verified
    assert request.body["userAttr"] == [{"hobby": "跑步 7", "level": 7}]


async def test_import_into_a_redis_that_is_down_is_one_line_and_exit_1(
    redis_setup: MakeSetup, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    setup = redis_setup(redis_url=f"redis://:the-redis-password@127.0.0.1:{port}/0")
    config = write_config(setup, tmp_path)
    code, out, err = await run_cli(
        "attributes",
        "import",
        "--config",
        str(config),
        str(_users_file(tmp_path, 3)),
        env=setup.environ,
    )
    assert code == 1
    assert (
        f"webhook-consumer: AttributesUnavailable: redis attribute store "
        f"'redis://***@127.0.0.1:{port}/0': "
    ) in err
    assert "the-redis-password" not in out + err
    assert "Traceback" not in err


async def test_run_delivers_the_attributes_held_in_redis(
    bootstrap: str,
    redis_setup: MakeSetup,
    receiver: Receiver,
    running_service: StartService,
) -> None:
    setup = redis_setup(bootstrap)
    config = setup.config()
    assert config.attributes.backend == "redis"
    store = open_store(config.attributes)
    await store.put_many(
        [(f"u-{i}", {"hobby": f"h{i}", "level": i, "private": "not sent"}) for i in range(20)]
    )
    await store.close()
    await create_topic(bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(25)]  # u-20..u-24 have no attributes
    await produce(bootstrap, setup.topic, encoded(events))
    expected = {("hobbies", delivery_id("hobbies", [e["event_id"]])) for e in events}

    service = running_service(config, setup.environ)
    assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=60)
    await service.shutdown()

    assert all(r.verified for r in receiver.received)
    # Exactly one request per event: the mapping below would hide a second one.
    assert sorted(r.delivery_id for r in receiver.received) == sorted(d for _, d in expected)
    user_of = {delivery_id("hobbies", [e["event_id"]]): e["user_id"] for e in events}
    sent = {user_of[r.delivery_id]: r.body["userAttr"] for r in receiver.delivered()}
    assert sent == {
        **{f"u-{i}": [{"hobby": f"h{i}", "level": i}] for i in range(20)},
        **{f"u-{i}": [] for i in range(20, 25)},
    }
