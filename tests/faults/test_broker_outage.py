"""The broker stops for 20 s mid-stream and comes back (same data, same ports) under three running
replicas: nothing is lost, no replica is restarted, and the same processes deliver the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.kafka import PrivateBroker
from tests.integration.support import committed_to_end, end_offsets
from tests.support.commits import committed
from tests.support.duplicates import DuplicateBound

from .fleet import Fleet
from .receiver import FaultReceiver
from .scenario import (
    CHANNELS,
    INPUT_PARTITIONS,
    KAFKA,
    REPLICAS,
    Stream,
    create_input,
    produce,
    setup_for,
)

# A fleet of processes for a minute or two, and waits of up to 180 s for what must arrive.
pytestmark = pytest.mark.timeout(420)

OUTAGE_SECONDS = 20.0


async def test_a_broker_outage_mid_stream_loses_nothing_and_the_same_processes_recover(
    private_broker: PrivateBroker,
    redis_url: str,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    started = time.monotonic()
    bootstrap = private_broker.bootstrap
    receiver = FaultReceiver({})
    await receiver.start()
    setup, config = setup_for(bootstrap, receiver, tmp_path, redis_url)
    await create_input(setup)
    stream = Stream.of()
    expected = len(stream.expected)
    try:
        async with Fleet(REPLICAS, config, setup.environ, tmp_path) as fleet:
            assert await fleet.settled(setup.topic, INPUT_PARTITIONS, within=90), fleet.logs()
            producing = asyncio.create_task(produce(setup, stream))
            assert await receiver.wait_for(
                lambda: len(receiver.answered) >= 0.4 * expected, within=120
            ), f"only {len(receiver.answered)} delivered\n{fleet.logs()}"
            await producing  # before the broker goes: all the input is written
            commits_at_stop = await committed(bootstrap, setup.group)
            ends_at_stop = await end_offsets(bootstrap, setup.topic)
            lines_at_stop = [len(r.process.log.lines()) for r in fleet.replicas]
            at_stop, delivered_at_stop = time.monotonic(), len(receiver.answered)
            await private_broker.stop()
            down_at = time.monotonic()
            # The outage is the scenario: this long without a broker, nothing is waited for.
            await asyncio.sleep(OUTAGE_SECONDS)
            delivered_in_outage = len(receiver.answered) - delivered_at_stop
            restart_at = time.monotonic()
            await private_broker.start()  # same folder and ports: the same data
            up_at = time.monotonic()

            everything = await receiver.wait_for(lambda: len(receiver.answered) >= expected, 180)
            assert everything, (
                f"{len(stream.expected - receiver.delivered)} pairs lost\n{fleet.logs()}"
            )
            assert all(replica.running for replica in fleet.replicas), fleet.logs()
            assert await committed_to_end(setup, within=60), "commits never reached the end"
            statuses = await fleet.stop()
            # Input partitions handed out again after the stop (a rebalance once the broker
            # was back, even to the same owner); a partition that stayed put redoes nothing.
            reassigned = {
                (topic, partition)
                for replica, mark in zip(fleet.replicas, lines_at_stop, strict=True)
                for line in replica.process.log.lines()[mark:]
                if line.get("event") == "partitions.assigned"
                for topic, partition in line["partitions"]
                if topic == setup.topic
            }
        assert statuses == [0] * REPLICAS, fleet.logs()
    finally:
        await receiver.stop()

    # Work was pending at the stop, and more than the fleet could hold in memory: the rest
    # could only come from the broker once it was back.
    held_at_most = (
        len(CHANNELS)
        * INPUT_PARTITIONS
        * (KAFKA["max_in_flight_per_partition"] + KAFKA["max_poll_records"] - 1)
    )
    pending_at_stop = expected - delivered_at_stop
    assert pending_at_stop > held_at_most, f"only {pending_at_stop} pairs left at the stop"
    assert [t for t in receiver.answer_times if t > up_at], "nothing delivered after the outage"
    # An outage kills no replica: each keeps what it read and commits it once the broker is
    # back. Only a partition handed out again can be redone, and at most its records above
    # the commit point it had when the broker stopped.
    bound = DuplicateBound(
        channels=len(CHANNELS),
        partitions=len(reassigned),
        max_in_flight_per_partition=KAFKA["max_in_flight_per_partition"],
        max_poll_records=KAFKA["max_poll_records"],
        commit_interval_ms=KAFKA["commit_interval_ms"],
        records_per_second=None,
        above_commits=sum(
            ends_at_stop[p] - (commits_at_stop[(t, p)].offset if (t, p) in commits_at_stop else 0)
            for t, p in reassigned
        ),
    )
    assert receiver.delivered == stream.expected
    assert receiver.unverified == 0
    quiet = max(t for t in receiver.answer_times if t < restart_at) - at_stop
    resumed = min(t for t in receiver.answer_times if t > up_at) - up_at
    last = max(receiver.answer_times) - up_at
    report(
        f"{expected} pairs, {REPLICAS} replicas; broker stopped after {delivered_at_stop} "
        f"delivered (stopping took {down_at - at_stop:.1f} s); {delivered_in_outage} more "
        f"while it stopped and was down (what was read already), the last {quiet:.1f} s after "
        f"the stop began; down for {OUTAGE_SECONDS:.0f} s; restart took "
        f"{up_at - restart_at:.1f} s; from broker ready: "
        f"deliveries resumed after {resumed:.1f} s, the last one after {last:.1f} s; "
        f"{pending_at_stop} pairs pending at the stop; {len(reassigned)} input partitions "
        f"handed out again; duplicates {receiver.duplicates} <= bound {bound}; "
        f"no replica restarted; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    assert receiver.duplicates <= bound.deliveries
