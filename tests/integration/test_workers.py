"""`run --workers 2` as a real process tree on the real broker: both children join the group,
everything is delivered, a killed child comes back, and SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.commits import CommitWatch
from tests.support.duplicates import DuplicateBound
from tests.support.polling import until
from tests.support.processes import Launch, ServiceProcess, run_args

from .support import (
    Setup,
    channel,
    committed_to_end,
    create_topic,
    encoded,
    event,
    group_state,
    pairs_delivered,
    produce,
    read_all,
    write_config,
)

CHANNELS = ["alpha", "beta"]
PARTITIONS = 6


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid`, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _workers(launch: Launch, config: Path, env: dict[str, str], tmp_path: Path) -> ServiceProcess:
    return launch(run_args(config, "--workers", "2"), env, tmp_path / "service.log")


def _setup(bootstrap: str, receiver: Receiver, tmp_path: Path, **channel_options: object) -> Setup:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, name, **channel_options) for name in CHANNELS],
        {"c": CHANNELS},
        tmp=str(tmp_path),
    )
    setup.kafka.update(shutdown_grace_seconds=15)
    return setup


async def _two_members(setup: Setup) -> bool:
    return await group_state(setup.bootstrap, setup.group) == ("Stable", 2)


async def test_two_workers_join_the_group_deliver_once_and_stop_cleanly(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    setup = _setup(bootstrap, receiver, tmp_path)
    await create_topic(bootstrap, setup.topic, 6)
    parent = _workers(launch, write_config(setup, tmp_path), setup.environ, tmp_path)
    await parent.start()
    assert await until(lambda: len(_children(parent.pid)) == 2, within=30), parent.log.tail()
    workers = _children(parent.pid)
    assert await until(lambda: _two_members(setup), within=60, every=0.2), parent.log.tail()

    events = [event("c", f"u-{i}") for i in range(2000)]
    await produce(bootstrap, setup.topic, encoded(events))
    expected = {(ch, delivery_id(ch, [e["event_id"]])) for e in events for ch in CHANNELS}
    assert await receiver.wait_for(lambda r: len(r.received) >= len(expected), within=90)
    assert await committed_to_end(setup, within=30)
    code = await parent.stop()

    assert code == 0, parent.log.tail()
    assert pairs_delivered(receiver) == expected
    assert len(receiver.received) == len(expected)  # no rebalance after the join: once each
    assert not [pid for pid in workers if _alive(pid)]


@pytest.mark.timeout(240)  # some 55 s: a rebalance after the kill and another after the restart
async def test_a_killed_worker_is_restarted_and_the_work_completes(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    # Rate-limited so the stream is still running when a worker dies; few records in flight
    # per partition, so the duplicate bound means something.
    setup = _setup(bootstrap, receiver, tmp_path, rate_limit={"per_second": 400, "burst": 50})
    setup.kafka.update(max_in_flight_per_partition=50, max_poll_records=50)
    await create_topic(bootstrap, setup.topic, PARTITIONS)
    parent = _workers(launch, write_config(setup, tmp_path), setup.environ, tmp_path)
    log = parent.log.path
    await parent.start()
    try:
        assert await until(lambda: _two_members(setup), 60, every=0.2), log.read_text()[-3000:]
        workers = _children(parent.pid)
        events = [event("c", f"u-{i}") for i in range(4000)]
        await produce(bootstrap, setup.topic, encoded(events))
        expected = {(ch, delivery_id(ch, [e["event_id"]])) for e in events for ch in CHANNELS}
        input_partitions = {(setup.topic, p) for p in range(PARTITIONS)}
        async with CommitWatch(bootstrap, setup.group) as watch:
            watched = time.monotonic()  # a rate needs a second of commits before the kill
            assert await receiver.wait_for(
                lambda r: len(r.received) >= 1000 and time.monotonic() - watched > 1.5, 60
            )
            victim, at_kill = min(workers), time.monotonic()
            os.kill(victim, signal.SIGKILL)
            # Both workers' rate: an upper bound on the victim's own.
            rate = watch.finished_per_second(input_partitions, before=at_kill)
        assert await until(
            lambda: len(_children(parent.pid) - workers) == 1 and not _alive(victim), within=30
        ), log.read_text()[-3000:]
        assert await until(lambda: _two_members(setup), 60, every=0.2), log.read_text()[-3000:]

        assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=120)
        assert await committed_to_end(setup, within=60)
        restarted = _children(parent.pid)
    finally:
        code = await parent.stop()

    assert code == 0, log.read_text()[-3000:]
    assert '"event": "worker.crashed"' in log.read_text()
    assert not [pid for pid in workers | restarted if _alive(pid)]
    assert len(pairs_delivered(receiver)) == len(expected)
    # Only the victim's partitions can redo anything: the survivor finished and committed its
    # own on the revoke. Of 6 input partitions the range assignor gave each worker 3.
    partition_of = {
        delivery_id(ch, [orjson.loads(r.value)["event_id"]]): r.partition
        for r in await read_all(bootstrap, setup.topic)
        for ch in CHANNELS
    }
    answered = Counter(r.delivery_id for r in receiver.delivered())
    repeated = {partition_of[d] for d, n in answered.items() if n > 1}
    duplicates = sum(answered.values()) - len(answered)
    bound = DuplicateBound.after_kill(
        setup.config().kafka, len(CHANNELS), partitions=PARTITIONS // 2, records_per_second=rate
    )
    print(f"\nworker SIGKILL: duplicates {duplicates} on partitions {sorted(repeated)} <= {bound}")
    assert len(repeated) <= PARTITIONS // 2, f"duplicates on partitions {sorted(repeated)}"
    assert duplicates <= bound.deliveries


async def test_workers_that_cannot_reach_the_broker_exit_1_and_leave_nothing(
    tmp_path: Path, launch: Launch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                # No wait for a broker that is not up yet: this is about the supervisor.
                "kafka": {"bootstrap_servers": "127.0.0.1:1", "startup_timeout_seconds": 0},
                "allowed_networks": ["127.0.0.0/8"],
                "channels": [{"name": "a", "url": "http://127.0.0.1:9/"}],
            }
        ),
        encoding="utf-8",
    )
    parent = await _workers(launch, config, {}, tmp_path).start()
    seen: set[int] = set()

    def watch() -> bool:
        seen.update(_children(parent.pid))
        return parent.returncode is not None

    assert await until(watch, within=60, every=0.2), parent.log.tail()
    assert await parent.wait() == 1
    assert parent.log.count("worker.failed_to_start") >= 1
    assert not [pid for pid in seen if _alive(pid)]
