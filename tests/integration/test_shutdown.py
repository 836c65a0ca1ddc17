"""SIGTERM to a real `webhook-consumer run` process mid-stream, then a restart: nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consumer.delivery import delivery_id
from consumer.receiver import Receiver

from .support import (
    Setup,
    channel,
    committed_offsets,
    create_topic,
    delay_topics_named,
    encoded,
    end_offsets,
    event,
    pairs_delivered,
    produce,
    record_count,
    write_config,
)

CHANNELS = ["alpha", "beta"]


_STARTED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _no_service_left_running() -> AsyncIterator[None]:
    """A failed assertion between start and stop must not leave a service consuming on."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _start(config_path: Path, setup: Setup, log: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "run",
        "--config",
        str(config_path),
        env={**os.environ, **setup.environ},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    _STARTED.append(process)
    return process


async def _stop(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, then the exit code once it has drained."""
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 30)


async def _produce_events(setup: Setup, count: int) -> list[dict[str, Any]]:
    """`count` events for campaign "c" on the setup's topic, created with 3 partitions."""
    await create_topic(setup.bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(count)]
    await produce(setup.bootstrap, setup.topic, encoded(events))
    return events


async def test_sigterm_drains_commits_and_a_restart_loses_nothing(
    bootstrap: str, receiver: Receiver, tmp_path: Path
) -> None:
    limited = {"rate_limit": {"per_second": 1500, "burst": 100}}
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, n, **limited) for n in CHANNELS],
        {"c": CHANNELS},
        tmp=str(tmp_path),
    )
    # A small in-flight bound, so SIGTERM leaves most of the topic for the restart.
    setup.kafka.update(shutdown_grace_seconds=15, max_in_flight_per_partition=100)
    config_path = write_config(setup, tmp_path)
    log = tmp_path / "service.log"
    events = await _produce_events(setup, 5000)
    expected = {(ch, delivery_id(ch, [e["event_id"]])) for e in events for ch in CHANNELS}

    first = await _start(config_path, setup, log)
    assert await receiver.wait_for(lambda r: len(r.received) >= 2000, within=60)
    assert await _stop(first) == 0, log.read_text()[-3000:]
    at_stop = len(pairs_delivered(receiver))
    assert at_stop < len(expected), "the stream had finished before SIGTERM: test proves nothing"
    committed = await committed_offsets(bootstrap, setup.group, setup.topic)
    assert sum(committed.values()) > 0, "nothing committed on shutdown"

    second = await _start(config_path, setup, log)
    try:
        assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=90), (
            f"{len(expected - pairs_delivered(receiver))} pairs never delivered"
        )
    finally:
        assert await _stop(second) == 0
    assert all(r.verified for r in receiver.received)
    ends = await end_offsets(bootstrap, setup.topic)
    assert await committed_offsets(bootstrap, setup.group, setup.topic) == ends
    duplicates = len(receiver.delivered()) - len(pairs_delivered(receiver))
    print(
        f"\nSIGTERM after {at_stop} of {len(expected)} pairs; after restart all delivered, "
        f"{duplicates} duplicate deliveries"
    )
    # A drained stop commits what it finished: at most what was in flight could come again
    # (3 partitions x 100 records x 3 channels), never the uncommitted rest of the topic.
    assert duplicates <= 3 * 100 * len(CHANNELS), f"{duplicates} duplicates"


async def test_a_second_replica_takes_partitions_over_without_losing_work(
    bootstrap: str, receiver: Receiver, tmp_path: Path
) -> None:
    # 20 s of work at this rate: the second replica's start and the rebalance it causes take
    # up to 10 s on a loaded 2-core machine, and must land while work is left.
    limited = {"rate_limit": {"per_second": 100, "burst": 50}}
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "alpha", **limited)],
        {"c": ["alpha"]},
        tmp=str(tmp_path),
    )
    setup.kafka.update(max_in_flight_per_partition=50, revoke_grace_seconds=10)
    setup.log_level = "info"
    config_path = write_config(setup, tmp_path)
    log = tmp_path / "service.log"
    events = await _produce_events(setup, 2000)
    expected = {("alpha", delivery_id("alpha", [e["event_id"]])) for e in events}

    first = await _start(config_path, setup, log)
    second = None
    try:
        assert await receiver.wait_for(lambda r: len(r.received) >= 300, within=60)
        second = await _start(config_path, setup, log)  # joins the group: a rebalance
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while log.read_text().count('"partitions.assigned"') < 3:  # first, then both again
            assert loop.time() < deadline, "the second replica never joined"
            await asyncio.sleep(0.2)  # polling the log for a condition, with a deadline
        assert pairs_delivered(receiver) < expected, "all delivered before the rebalance"
        assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=120), (
            f"{len(expected - pairs_delivered(receiver))} never delivered\n"
            + log.read_text()[-3000:]
        )
    finally:
        for process in (first, second):
            if process is not None:
                process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 30) for p in (first, second) if p]
    assert codes == [0, 0]
    assert "partitions.revoked" in log.read_text()
    ends = await end_offsets(bootstrap, setup.topic)
    assert await committed_offsets(bootstrap, setup.group, setup.topic) == ends
    duplicates = len(receiver.delivered()) - len(pairs_delivered(receiver))
    print(f"\nrebalance mid-stream: all {len(expected)} delivered, {duplicates} duplicates")
    # Only a moved partition's unfinished work is redone: 3 partitions x 50 in flight, at most.
    assert duplicates <= 3 * 50, f"{duplicates} duplicates"


async def test_sigkill_between_delay_produce_and_commit_loses_nothing(
    bootstrap: str, receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "down"), channel(receiver, "up")],
        {"c": ["down", "up"]},
        tmp=str(tmp_path),
        retry={"quick_attempts": 1, "schedule_seconds": [2]},
    )
    # Commits are rare, so the kill lands after delay records were produced but before
    # the input offsets that produced them were committed.
    setup.kafka.update(commit_interval_ms=600_000)
    config_path = write_config(setup, tmp_path)
    log = tmp_path / "service.log"
    receiver.answer("down", default=503)
    events = await _produce_events(setup, 500)
    expected = {(ch, delivery_id(ch, [e["event_id"]])) for e in events for ch in ("down", "up")}

    first = await _start(config_path, setup, log)

    async def delayed() -> int:  # retries and deliveries held by the open circuit alike
        topics = await delay_topics_named(bootstrap, f"{setup.group}.retry")
        return sum([await record_count(bootstrap, topic) for topic in topics])

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while await delayed() < 100:
        assert loop.time() < deadline, "no delay records were produced"
        await asyncio.sleep(0.1)  # polling the broker for a condition, with a deadline
    first.send_signal(signal.SIGKILL)
    await first.wait()
    committed = await committed_offsets(bootstrap, setup.group, setup.topic)
    assert sum(committed.values()) < len(events), "input was committed: the kill came too late"

    receiver.answer("down", default=200)
    second = await _start(config_path, setup, log)
    try:
        assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=90), (
            f"{len(expected - pairs_delivered(receiver))} pairs lost"
        )
    finally:
        assert await _stop(second) == 0
    duplicates = len(receiver.delivered()) - len(pairs_delivered(receiver))
    print(f"\nSIGKILL after delay produce: nothing lost, {duplicates} duplicate deliveries")
    # The uncommitted input is read again: each of its events may reach "up" a second time,
    # and "down" both from the first run's delay record and from the re-read; no more.
    redone = len(events) - sum(committed.values())
    assert duplicates <= 2 * redone, f"{duplicates} duplicates for {redone} redone events"
