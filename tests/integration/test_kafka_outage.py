"""A broker restart under a running `webhook-consumer run`, as an operator reads it on stderr.

The broker is a private one (deploy/local/kafka with its own folder and ports): the shared
one must never stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consumer.receiver import Receiver

from .kafka import REPO, PrivateBroker, free_port
from .support import (
    Setup,
    channel,
    committed_to_end,
    create_topic,
    encoded,
    event,
    pairs_delivered,
    produce,
    write_config,
)

OUTAGE_SECONDS = 12.0
# Jars are copied once into this folder and reused; the data is wiped on the first start.
BROKER_HOME = REPO / ".cache" / "kafka-outage-test"


@pytest.fixture
async def broker() -> AsyncIterator[PrivateBroker]:
    private = PrivateBroker(BROKER_HOME, free_port(), free_port())
    await private.start(fresh=True)
    try:
        yield private
    finally:
        await private.stop()


class Stderr:
    """The service's stderr, written to a file and read back as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in map(json.loads, self.text().splitlines()) if line["event"] == name]

    async def wait_for(self, name: str, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.events(name):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.2)  # polling a file for a condition, with a deadline
        return True


async def test_a_broker_restart_is_two_log_lines_and_no_event_is_lost(
    broker: PrivateBroker, receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(
        broker.bootstrap,
        receiver,
        [channel(receiver, "hooks")],
        {"c": ["hooks"]},
        log_level="info",
        tmp=str(tmp_path),
    )
    config = write_config(setup, tmp_path)
    await create_topic(broker.bootstrap, setup.topic, 3)
    before = [event("c", f"u-{i}") for i in range(20)]
    await produce(broker.bootstrap, setup.topic, encoded(before))

    stderr = Stderr(tmp_path / "stderr.log")
    with stderr.path.open("wb") as sink:
        service = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--config",
            str(config),
            "--log-format",
            "auto",  # a file, not a terminal: JSON
            env={**os.environ, **setup.environ},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        assert await receiver.wait_for(lambda r: len(pairs_delivered(r)) == 20, within=60)
        assert await committed_to_end(setup, within=30)

        loop = asyncio.get_running_loop()
        await broker.stop()
        stopped_at, lines_before = loop.time(), len(stderr.text().splitlines())
        assert await stderr.wait_for("kafka.unreachable", within=30), stderr.text()[-3000:]
        # The outage itself lasts this long; nothing is being waited for.
        await asyncio.sleep(OUTAGE_SECONDS - (loop.time() - stopped_at))
        lines_during = len(stderr.text().splitlines()) - lines_before
        await broker.start()  # same folder: same data, same ports

        after = [event("c", f"v-{i}") for i in range(20)]
        await produce(broker.bootstrap, setup.topic, encoded(after))
        assert await receiver.wait_for(lambda r: len(pairs_delivered(r)) == 40, within=90)
        assert await committed_to_end(setup, within=60)
        assert await stderr.wait_for("kafka.recovered", within=30), stderr.text()[-3000:]
        assert service.returncode is None  # the same process delivered all of it
    finally:
        if service.returncode is None:
            service.send_signal(signal.SIGTERM)
        await asyncio.wait_for(service.wait(), 60)
    assert service.returncode == 0

    lines = stderr.text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line, aiokafka's included, is JSON
    assert all({"event", "level", "logger", "timestamp"} <= line.keys() for line in parsed)
    (unreachable,) = stderr.events("kafka.unreachable")
    (recovered,) = stderr.events("kafka.recovered")
    assert unreachable["error"]
    assert recovered["down_seconds"] >= OUTAGE_SECONDS - 2
    # aiokafka wrote about a hundred lines a second during the outage; they were folded.
    assert recovered["suppressed"] >= 100
    assert lines_during <= 3, lines[lines_before : lines_before + lines_during]
    assert not [line for line in parsed if line["level"] == "error"]
