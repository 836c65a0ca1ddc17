"""Dead letters after exhausted retries, `dlq stats`, and `dlq replay` as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from consumer.deadletter import DeadLetter, Reason, SourceRef
from consumer.delivery import delivery_id
from consumer.receiver import Receiver

from .support import (
    RunningService,
    Setup,
    channel,
    create_topic,
    encoded,
    event,
    produce,
    read_all,
    record_count,
    write_config,
)


async def _cli(config: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "dlq",
        *args,
        "--config",
        str(config),
        env={**os.environ, **env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def _wait_count(bootstrap: str, topic: str, at_least: int, within: float = 60) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while await record_count(bootstrap, topic) < at_least:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.2)  # polling the broker for a condition, with a deadline
    return True


async def test_exhausted_retries_dead_letter_then_replay_delivers_each_once(
    bootstrap: str, receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "r")],
        {"c": ["r"]},
        tmp=str(tmp_path),
        retry={
            "quick_attempts": 2,
            "schedule_seconds": [1],
            "circuit_breaker": {"failures": 1000, "cooldown_seconds": 1},
        },
    )
    config_file = write_config(setup, tmp_path)
    receiver.answer("r", default=503)
    await create_topic(bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(20)]
    await produce(bootstrap, setup.topic, encoded(events))
    ids = {delivery_id("r", [e["event_id"]]) for e in events}

    service = RunningService(setup.config(), setup.environ)
    try:
        assert await _wait_count(bootstrap, setup.dead_letter_topic, 20)
        # Two quick attempts, then one after the 1 s delay: three requests per delivery.
        assert len(receiver.received) == 60
        assert {r.attempt for r in receiver.received} == {1, 2, 3}

        code, out = await _cli(config_file, setup.environ, "stats")
        assert code == 0, out
        assert re.search(r"│ r\s+│ http_status\s+│\s+20 │", out), out

        delay_topic = setup.delay_topic(1)
        before = await record_count(bootstrap, delay_topic)
        code, out = await _cli(config_file, setup.environ, "replay", "--dry-run")
        assert code == 0, out
        assert "would replay 20 of 20" in out
        assert await record_count(bootstrap, delay_topic) == before, "a dry run sent something"

        receiver.answer("r", default=200)  # the receiver is fixed
        code, out = await _cli(
            config_file, setup.environ, "replay", "--channel", "r", "--limit", "5"
        )
        assert code == 0, out
        assert "replayed 5 of 5" in out
        code, out = await _cli(config_file, setup.environ, "replay", "--channel", "r")
        assert code == 0, out
        assert "replayed 15 of 15" in out, "the second run must resume after the first five"
        assert await receiver.wait_for(lambda r: len(r.delivered()) >= 20, within=30)

        code, out = await _cli(config_file, setup.environ, "replay", "--channel", "r")
        assert "replayed 0 of 0" in out, out
    finally:
        await service.shutdown()
    delivered = [r for r in receiver.delivered()]
    assert sorted(r.delivery_id for r in delivered) == sorted(ids), "each exactly once"
    assert all(r.attempt == 4 for r in delivered)  # the count goes on across the replay


async def test_an_interrupted_replay_resumes_without_replaying_twice(
    bootstrap: str, receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(bootstrap, receiver, [channel(receiver, "r")], {"c": ["r"]}, tmp=str(tmp_path))
    config_file = write_config(setup, tmp_path)
    await create_topic(bootstrap, setup.dead_letter_topic, 3)
    delay_topic = setup.delay_topic(5)
    await create_topic(bootstrap, delay_topic, 3)
    total = 20_000  # enough that the interrupt lands mid-way, however fast the replay is
    now = datetime.now(UTC)
    letters = [
        DeadLetter(
            delivery_id=f"d-{i}",
            channel="r",
            campaign_id="c",
            events=[{"event_id": f"e-{i}"}],
            reason=Reason(kind="http_status", status=503),
            attempts=3,
            first_attempt_at=now,
            last_attempt_at=now,
            dead_lettered_at=now,
            source=SourceRef(topic=setup.topic, partition=0, offset=i),
            sources=[SourceRef(topic=setup.topic, partition=0, offset=i)],
        ).encode()
        for i in range(total)
    ]
    await produce(bootstrap, setup.dead_letter_topic, [(None, value) for value in letters])

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "dlq",
        "replay",
        "--config",
        str(config_file),
        env={**os.environ, **setup.environ},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while await record_count(bootstrap, delay_topic) < 300:
        assert loop.time() < deadline, "the replay never started"
        await asyncio.sleep(0.05)  # polling the broker for a condition, with a deadline
    process.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 130  # what a shell reports for Ctrl-C
    assert "interrupted" in out.decode(), out.decode()
    first_run = await record_count(bootstrap, delay_topic)
    assert first_run < total, "the replay had finished before the interrupt: test proves nothing"

    code, out2 = await _cli(config_file, setup.environ, "replay")
    assert code == 0, out2
    replayed = [
        orjson.loads(r.value)["delivery_id"] for r in await read_all(bootstrap, delay_topic)
    ]
    assert len(replayed) == total, f"{len(replayed) - total:+d} records against {total}"
    assert len(set(replayed)) == total, "a record was replayed twice"
