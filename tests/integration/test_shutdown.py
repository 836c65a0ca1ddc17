"""SIGTERM to a real `webhook-consumer run` process mid-stream, then a restart: nothing lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.duplicates import DuplicateBound
from tests.support.polling import until
from tests.support.processes import Launch, run_args

from .support import (
    Setup,
    channel,
    committed_offsets,
    create_topic,
    delayed_deliveries,
    encoded,
    end_offsets,
    event,
    pairs_delivered,
    produce,
    write_config,
)

CHANNELS = ["alpha", "beta"]


async def _produce_events(setup: Setup, count: int) -> list[dict[str, Any]]:
    """`count` events for campaign "c" on the setup's topic, created with 3 partitions."""
    await create_topic(setup.bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(count)]
    await produce(setup.bootstrap, setup.topic, encoded(events))
    return events


async def test_sigterm_drains_commits_and_a_restart_loses_nothing(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    limited = {"rate_limit": {"per_second": 1500, "burst": 100}}
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, n, **limited) for n in CHANNELS],
        {"c": CHANNELS},
        tmp=str(tmp_path),
        log_level="info",  # the drain says whether it finished everything
    )
    # A small in-flight bound, so SIGTERM leaves most of the topic for the restart.
    setup.kafka.update(shutdown_grace_seconds=15, max_in_flight_per_partition=100)
    service = launch(run_args(write_config(setup, tmp_path)), setup.environ, tmp_path / "log")
    events = await _produce_events(setup, 5000)
    expected = {(ch, delivery_id(ch, [e["event_id"]])) for e in events for ch in CHANNELS}

    await service.start()
    assert await receiver.wait_for(lambda r: len(r.received) >= 2000, within=60)
    assert await service.stop() == 0, service.log.tail()
    at_stop = len(pairs_delivered(receiver))
    assert at_stop < len(expected), "the stream had finished before SIGTERM: test proves nothing"
    committed = await committed_offsets(bootstrap, setup.group, setup.topic)
    assert sum(committed.values()) > 0, "nothing committed on shutdown"

    await service.start()  # the restart
    assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=90), (
        f"{len(expected - pairs_delivered(receiver))} pairs never delivered"
    )
    assert await service.stop() == 0, service.log.tail()
    assert all(r.verified for r in receiver.received)
    ends = await end_offsets(bootstrap, setup.topic)
    assert await committed_offsets(bootstrap, setup.group, setup.topic) == ends
    duplicates = len(receiver.delivered()) - len(pairs_delivered(receiver))
    print(
        f"\nSIGTERM after {at_stop} of {len(expected)} pairs; after restart all delivered, "
        f"{duplicates} duplicate deliveries"
    )
    # The drain finished everything in flight (the receiver answers at once, the grace is 15 s)
    # and committed it, naming what it finished above a held head in the commit's metadata:
    # the restart redoes no record, so not one delivery may come twice.
    assert service.log.events("drained")[0]["complete"], "the drain left work unfinished"
    assert duplicates == 0, f"{duplicates} duplicates after a complete drain"


async def test_a_second_replica_takes_partitions_over_without_losing_work(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    limited = {"rate_limit": {"per_second": 200, "burst": 50}}
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "alpha", **limited)],
        {"c": ["alpha"]},
        tmp=str(tmp_path),
    )
    # What a revoke must finish: per partition at most max_in_flight + max_poll_records - 1 =
    # 99 records, 297 for the three, 1.5 s at 200/s: well inside the 10 s grace even on a
    # loaded machine (with the default 500 records a poll it would be 1,647, 8 s).
    setup.kafka.update(max_in_flight_per_partition=50, max_poll_records=50, revoke_grace_seconds=10)
    setup.log_level = "info"
    config_path = write_config(setup, tmp_path)
    # 20 s at 200/s: a join takes seconds (the first member learns of it at a heartbeat, then
    # drains what it gives back), and work must be left when it is done.
    events = await _produce_events(setup, 4000)
    expected = {("alpha", delivery_id("alpha", [e["event_id"]])) for e in events}

    first = await launch(run_args(config_path), setup.environ, tmp_path / "first.log").start()
    second = launch(run_args(config_path), setup.environ, tmp_path / "second.log")
    assert await receiver.wait_for(lambda r: len(r.received) >= 300, within=60)
    await second.start()  # joins the group: a rebalance
    joined = lambda: (  # noqa: E731
        second.log.count("partitions.assigned") >= 1 and first.log.count("partitions.assigned") >= 2
    )
    assert await until(joined, within=60), "the second replica never joined"
    assert pairs_delivered(receiver) < expected, "all delivered before the rebalance"
    assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=120), (
        f"{len(expected - pairs_delivered(receiver))} never delivered\n{first.log.tail()}"
    )
    codes = [await first.stop(), await second.stop()]
    assert codes == [0, 0]
    revokes = first.log.events("partitions.revoked")
    assert revokes, "the first replica never gave partitions back"
    ends = await end_offsets(bootstrap, setup.topic)
    assert await committed_offsets(bootstrap, setup.group, setup.topic) == ends
    duplicates = len(receiver.delivered()) - len(pairs_delivered(receiver))
    print(f"\nrebalance mid-stream: all {len(expected)} delivered, {duplicates} duplicates")
    # The first replica finished what it had in flight on the partitions it gave back (well
    # within revoke_grace_seconds, as argued above) and committed it before the second read
    # them, so nothing is redone: a revoke that left work behind would say complete=False.
    assert all(r["complete"] for r in revokes), revokes
    assert duplicates == 0, f"{duplicates} duplicates after complete revokes"


@pytest.mark.timeout(240)  # some 45 s, two process starts and a group session to expire
async def test_sigkill_between_delay_produce_and_commit_loses_nothing(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
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
    service = launch(run_args(write_config(setup, tmp_path)), setup.environ, tmp_path / "log")
    receiver.answer("down", default=503)
    events = await _produce_events(setup, 500)
    expected = {(ch, delivery_id(ch, [e["event_id"]])) for e in events for ch in ("down", "up")}

    await service.start()

    async def delayed() -> bool:  # retries and deliveries held by the open circuit alike
        return len(await delayed_deliveries(bootstrap, f"{setup.group}.retry")) >= 100

    assert await until(delayed, within=60, every=0.1), "no delay records were produced"
    await service.kill()
    committed = await committed_offsets(bootstrap, setup.group, setup.topic)
    assert sum(committed.values()) < len(events), "input was committed: the kill came too late"
    # With commits ten minutes apart, the records above the commit points are the bound: each
    # is read again and sent again to "up", and "down" gets it both from the first run's delay
    # record and from the re-read.
    ends = await end_offsets(bootstrap, setup.topic)
    bound = DuplicateBound.after_kill(
        setup.config().kafka,
        channels=2,
        partitions=len(ends),
        records_per_second=None,
        above_commits=sum(end - max(0, committed.get(p, 0)) for p, end in ends.items()),
    )

    receiver.answer("down", default=200)
    await service.start()
    assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=90), (
        f"{len(expected - pairs_delivered(receiver))} pairs lost"
    )
    assert await service.stop() == 0, service.log.tail()
    duplicates = len(receiver.delivered()) - len(pairs_delivered(receiver))
    print(f"\nSIGKILL after delay produce: nothing lost, {duplicates} duplicates <= {bound}")
    assert duplicates <= bound.deliveries
