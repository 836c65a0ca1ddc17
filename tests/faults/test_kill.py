"""SIGKILL to one of three replicas mid-stream, then its pod comes back under the same name (as
the StatefulSet restarts it; in a crash loop, it is killed again right after its first commit
and comes back once more): every (event, channel) pair arrives, the duplicates stay within what
the killed replica could have left unfinished or uncommitted, no record its last commits named
as finished is sent again, and the group commits to the end of the input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.support import committed_to_end
from tests.support.commits import Commit, CommitWatch, committed, uncommitted
from tests.support.duplicates import DuplicateBound

from .fleet import Fleet, Partition, Replica
from .receiver import FAST, FaultReceiver, Misbehaviour
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

# Held until the test releases them right after the kill (10 s at most, within the channels'
# 15 s timeout): the kill cannot miss the stall however slowly this process runs.
STALL = Misbehaviour(hold_first=20, hold_seconds=10.0)
DROP = Misbehaviour(drop_seconds=3.0)
# The kill comes this far into the stall, while the first requests are still held and the
# records behind them have been finishing for seconds above commit points that cannot move:
# the case the offset map is for.
KILL_INTO_STALL_SECONDS = 4.0


@dataclass(frozen=True, slots=True)
class Case:
    misbehaviour: Misbehaviour
    kill_now: Callable[[FaultReceiver, int], bool]  # (receiver, pairs expected) -> kill now
    # The restarted pod is killed again as soon as it commits a partition it took over:
    # whatever it had not read yet of what its predecessor finished must still be named.
    crash_loop: bool = False


def _good_part(receiver: FaultReceiver, expected: int) -> bool:
    return len(receiver.answered) >= 0.4 * expected


def _late_in_stall(receiver: FaultReceiver, expected: int) -> bool:
    first = receiver.first_request_at
    stalled_for = 0.0 if first is None else time.monotonic() - first
    return receiver.holding > 0 and stalled_for >= KILL_INTO_STALL_SECONDS


CASES = {
    "fast": Case(FAST, _good_part),
    "stalling": Case(STALL, _late_in_stall),
    "dropping": Case(DROP, _good_part),
    "stalling-crash-loop": Case(STALL, _late_in_stall, crash_loop=True),
}


def _victim(fleet: Fleet, receiver: FaultReceiver, stream: Stream) -> Replica:
    """With a stalling receiver, the replica whose partitions hold the most held deliveries:
    its successor is the one that must skip what was finished above them. Otherwise the
    middle one."""
    held = [stream.partition_of[d] for d in receiver.held]

    def stuck(replica: Replica) -> int:
        mine = {p for _, p in replica.assignment()}
        return sum(p in mine for p in held)

    return max(fleet.replicas, key=stuck) if held else fleet.replicas[1]


def _finished_above(
    stream: Stream,
    offsets: list[int],
    answered: dict[str, int],
    commits: dict[Partition, Commit],
    partitions: set[Partition],
) -> list[int]:
    """Events of these partitions at or above their committed offset whose every channel
    had been answered 2xx (per `answered`, a snapshot of the receiver's counts)."""
    marks = {p: commits[(t, p)].offset if (t, p) in commits else 0 for t, p in partitions}
    return [
        i
        for i, ids in enumerate(stream.deliveries)
        if stream.partition(i) in marks
        and offsets[i] >= marks[stream.partition(i)]
        and all(d in answered for d in ids)
    ]


def _named(
    stream: Stream, offsets: list[int], commits: dict[Partition, Commit], topic: str
) -> set[int]:
    """Events the commits name as finished above their commit points."""
    return {
        i
        for i in range(len(stream.events))
        if (topic, stream.partition(i)) in commits
        and offsets[i] in commits[(topic, stream.partition(i))].finished_above
    }


async def _bound(bootstrap: str, group: str, owned: set[Partition], rate: float) -> DuplicateBound:
    return DuplicateBound(
        channels=len(CHANNELS),
        partitions=await uncommitted(bootstrap, group, owned),
        max_in_flight_per_partition=KAFKA["max_in_flight_per_partition"],
        max_poll_records=KAFKA["max_poll_records"],
        commit_interval_ms=KAFKA["commit_interval_ms"],
        records_per_second=rate,
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_sigkill_of_a_replica_loses_nothing_and_duplicates_stay_bounded(
    case: Case,
    bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    started = time.monotonic()
    receiver = FaultReceiver({}, case.misbehaviour)
    await receiver.start()
    setup, config = setup_for(bootstrap, receiver, tmp_path, redis_url)
    await create_input(setup)
    stream = Stream.of()
    expected = len(stream.expected)
    try:
        async with Fleet(REPLICAS, config, setup.environ, tmp_path) as fleet:
            assert await fleet.settled(setup.topic, INPUT_PARTITIONS, within=90), fleet.logs()
            async with CommitWatch(bootstrap, setup.group) as watch:
                producing = asyncio.create_task(produce(setup, stream))  # mid-stream, really
                assert await receiver.wait_for(
                    lambda: case.kill_now(receiver, expected), within=120
                ), f"kill condition never met: {len(receiver.answered)} delivered"
                victim = _victim(fleet, receiver, stream)
                owned = victim.assignment()
                at_kill, answered_at_kill = time.monotonic(), dict(receiver.answered)
                holding_at_kill, duplicates_before = receiver.holding, receiver.duplicates
                await victim.kill()
                receiver.release()  # the stall ends with the kill
                offsets = await producing
                assert len(answered_at_kill) < expected, "the stream ended before the kill"
                last_commits = await committed(bootstrap, setup.group)  # the victim's last
                rate = watch.finished_per_second(owned, before=at_kill)
                bounds = [await _bound(bootstrap, setup.group, owned, rate)]
                named_again = 0  # what the restarted pod's first commit names, in a crash loop
                await victim.start()  # the pod again, under its name
                if case.crash_loop:
                    # Its successor runs the same partitions, at the same measured rate.
                    taken_over = {p for p in owned if p[0] == setup.topic}
                    first_commits = await watch.recommitted(taken_over, last_commits, 60)
                    await victim.kill()
                    assert first_commits is not None, "the restarted pod never committed"
                    named_again = sum(
                        len(c.finished_above) for p, c in first_commits.items() if p in taken_over
                    )
                    bounds.append(await _bound(bootstrap, setup.group, owned, rate))
                    await victim.start()

            everything = await receiver.wait_for(lambda: len(receiver.answered) >= expected, 180)
            all_at = time.monotonic()
            assert everything, (
                f"{len(stream.expected - receiver.delivered)} pairs lost\n{fleet.logs()}"
            )
            assert await committed_to_end(setup, within=60), "commits never reached the end"
            statuses = await fleet.stop()
        assert statuses == [0] * REPLICAS, fleet.logs()
    finally:
        await receiver.stop()

    assert receiver.delivered == stream.expected
    assert receiver.unverified == 0
    input_owned = {(t, p) for t, p in owned if t == setup.topic}
    victim_commits = {p: c for p, c in last_commits.items() if p in input_owned}
    above = _finished_above(stream, offsets, answered_at_kill, victim_commits, input_owned)
    named = _named(stream, offsets, victim_commits, setup.topic)
    redone = [
        i
        for i in above
        if any(receiver.answered[d] > answered_at_kill[d] for d in stream.deliveries[i])
    ]
    report(
        f"{expected} pairs ({len(stream.events)} events x {len(CHANNELS)} channels, "
        f"{INPUT_PARTITIONS} partitions, {REPLICAS} replicas); SIGKILL to {victim.name} "
        f"(input partitions {sorted(p for _, p in input_owned)}, "
        f"{len(owned) - len(input_owned)} delay partitions) "
        f"after {len(answered_at_kill)} delivered"
        + (f", {holding_at_kill} requests still held" if case.misbehaviour.hold_first else "")
        + (f", {receiver.dropped} requests cut" if case.misbehaviour.drop_seconds else "")
        + (
            f"; killed again after its first commit, which named {named_again} finished"
            if case.crash_loop
            else ""
        )
        + f"; duplicates {receiver.duplicates} ({duplicates_before} before the kill) "
        f"<= bound {' + '.join(map(str, bounds))}; {len(above)} records had every channel "
        f"answered above its commit points, {len(named)} named finished in its last commits; "
        f"{len(redone)} of them sent again, {len(named.intersection(redone))} of the named; "
        f"all delivered {all_at - at_kill:.1f} s after the kill; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    assert receiver.duplicates <= sum(bound.deliveries for bound in bounds)
    # The offset map's promise, exactly: what a commit names as finished is never redone.
    assert not named.intersection(redone)
    if case.misbehaviour.hold_first:
        # Records finished behind a held one can only be passed on in the commit metadata;
        # none named means the stall tested nothing (or the map is not written).
        assert named, "no record finished above a held one was named in the commits"
