"""What an operator reads: a whole `webhook-consumer run` at debug level, captured from stderr."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.processes import Launch, run_args

from .support import (
    Setup,
    channel,
    create_topic,
    encoded,
    event,
    produce,
    wait_record_count,
    write_config,
)


async def test_a_debug_run_is_json_on_every_line_with_ids_and_no_secret(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    password = "basic-pass-9d1f7c"
    guarded = channel(
        receiver, "guarded", basic_auth={"username": "gio", "password_env": "GUARDED_PASSWORD"}
    )
    setup = Setup(
        bootstrap,
        receiver,
        [guarded, channel(receiver, "down")],
        {"c": ["guarded", "down"]},
        tmp=str(tmp_path),
        log_level="debug",
        # Every "down" delivery: two quick attempts, one after the delay, then a dead letter.
        retry={
            "quick_attempts": 2,
            "schedule_seconds": [1],
            "circuit_breaker": {"failures": 1_000_000},
        },
        env={"GUARDED_PASSWORD": password},
    )
    receiver.answer("down", default=503)
    config_path = write_config(setup, tmp_path)
    events = [event("c", f"u-{i}") for i in range(20)]
    await create_topic(bootstrap, setup.topic, 2)
    await produce(bootstrap, setup.topic, encoded(events))
    environ = setup.environ
    args = run_args(config_path, "--log-format", "json")
    process = await launch(args, environ, tmp_path / "stderr.log").start()
    assert await receiver.wait_for(lambda r: len(r.delivered()) >= 20, within=60)
    assert await wait_record_count(bootstrap, setup.dead_letter_topic, 20, within=60)
    assert await process.stop() == 0

    text = process.log.text()
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]  # each is JSON
    assert all({"event", "level", "timestamp"} <= line.keys() for line in lines)
    secrets = [*environ.values(), base64.b64encode(f"gio:{password}".encode()).decode()]
    assert not [s for s in secrets if s in text], "a secret reached the log"

    per_delivery = [line for line in lines if str(line["event"]).startswith("delivery.")]
    assert {line["event"] for line in per_delivery} >= {
        "delivery.attempted",
        "delivery.retrying",
        "delivery.delayed",
        "delivery.redelivered",
        "delivery.delivered",
        "delivery.gave_up",
    }
    for line in per_delivery:
        assert {"delivery_id", "channel", "event_id", "attempt", "round"} <= line.keys(), line
    by_id = {
        delivery_id(ch, [e["event_id"]]): e["event_id"]
        for e in events
        for ch in ("guarded", "down")
    }
    assert [
        line for line in per_delivery if by_id.get(line["delivery_id"]) != line["event_id"]
    ] == []
    attempts = [line["attempt"] for line in per_delivery if line["event"] == "delivery.attempted"]
    assert min(attempts) == 1
    assert max(attempts) == 3  # two quick attempts, then one after the delay
    assert not [line for line in lines if line["level"] == "info" and line in per_delivery]
