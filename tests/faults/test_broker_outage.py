"""The broker stops for 20 s mid-stream and comes back (same data, same ports) under three running
replicas: nothing is lost, no replica is restarted, and the same processes deliver the rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.kafka import PrivateBroker
from tests.integration.support import committed_to_end
from tests.support.commits import CommitWatch, uncommitted
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
            owned = set().union(*fleet.assignments().values())
            async with CommitWatch(bootstrap, setup.group) as watch:
                producing = asyncio.create_task(produce(setup, stream))
                assert await receiver.wait_for(
                    lambda: len(receiver.answered) >= 0.4 * expected, within=120
                ), f"only {len(receiver.answered)} delivered\n{fleet.logs()}"
                measured_at = time.monotonic()
            await producing  # before the broker goes: all the input is written
            # What the fleet may have to redo: all it owned, as for a kill of every replica.
            bound = DuplicateBound(
                channels=len(CHANNELS),
                partitions=await uncommitted(bootstrap, setup.group, owned),
                max_in_flight_per_partition=KAFKA["max_in_flight_per_partition"],
                max_poll_records=KAFKA["max_poll_records"],
                commit_interval_ms=KAFKA["commit_interval_ms"],
                records_per_second=watch.finished_per_second(owned, before=measured_at),
            )
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
        assert statuses == [0] * REPLICAS, fleet.logs()
    finally:
        await receiver.stop()

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
        f"duplicates {receiver.duplicates} <= bound {bound}; no replica restarted; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    assert receiver.duplicates <= bound.deliveries
