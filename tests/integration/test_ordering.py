"""`ordering: per_user` on a real broker: two replicas of one group (each a `run_service` in
this process) while the receiver refuses everything for its first seconds, with partitions
moving between them twice (a replica joins, later the first one stops). Each user's
deliveries must reach the receiver in input order, on its own timeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumer.delivery import delivery_id

from .arrivals import ANSWERED, ARRIVED, ArrivalReceiver, order_violations
from .support import (
    Setup,
    StartService,
    channel,
    committed_to_end,
    create_topic,
    encoded,
    event,
    produce,
)

USERS = 40
EVENTS_PER_USER = 6
FAIL_SECONDS = 4.0


@pytest.fixture
async def receiver() -> AsyncIterator[ArrivalReceiver]:
    server = ArrivalReceiver({})
    await server.start()
    yield server
    await server.stop()


async def test_each_users_deliveries_arrive_in_order_through_failures_and_rebalances(
    bootstrap: str, receiver: ArrivalReceiver, tmp_path: Path, running_service: StartService
) -> None:
    ordered = channel(receiver, "ordered", ordering="per_user")  # type: ignore[arg-type]
    setup = Setup(
        bootstrap,
        receiver,  # type: ignore[arg-type]
        [ordered],
        {"c": ["ordered"]},
        retry={
            "schedule_seconds": [1, 1, 2, 2, 5, 5, 10],
            "circuit_breaker": {"failures": 3, "cooldown_seconds": 1, "max_cooldown_seconds": 2},
        },
        tmp=str(tmp_path),
    )
    config = setup.config()
    await create_topic(bootstrap, setup.topic, 3)
    events = [event("c", f"u-{u}", round=r) for r in range(EVENTS_PER_USER) for u in range(USERS)]
    users = [
        [delivery_id("ordered", [e["event_id"]]) for e in events if e["user_id"] == f"u-{u}"]
        for u in range(USERS)
    ]
    timeline = receiver.timeline("ordered")
    receiver.fail_for(FAIL_SECONDS)
    first = running_service(config, setup.environ)
    await produce(bootstrap, setup.topic, encoded(events))
    assert await receiver.wait_for(lambda: receiver.refused >= 10, 60), "nothing refused"
    second = running_service(config, setup.environ)  # partitions move while heads are out
    assert await receiver.wait_for(lambda: not receiver.failing, 30)
    assert await receiver.wait_for(lambda: len(timeline.answered) >= USERS, 60)
    await first.shutdown()  # and move again, while chains are being sent
    everything = len(events)
    assert await receiver.wait_for(lambda: len(timeline.answered) >= everything, 120)
    assert await committed_to_end(setup, within=60)
    await second.shutdown()
    assert receiver.unverified == 0
    assert order_violations(timeline.entries, users) == []
    assert set(timeline.answered) == {d for mine in users for d in mine}
    # Nothing answered 2xx twice: both moves of partitions are drained ones (a revoked
    # partition finishes or hands off what it holds, and commits, before it goes), no replica
    # is killed, and the receiver answers in 10 ms, far inside the timeout.
    assert timeline.duplicates == 0, {d: n for d, n in timeline.answered.items() if n > 1}


def test_the_order_check_sees_disorder_and_lets_duplicates_be() -> None:
    users = [["a0", "a1", "a2"], ["b0", "b1"]]
    in_order = [
        (ARRIVED, "a0"), (ARRIVED, "b0"), (ANSWERED, "b0"), (ANSWERED, "a0"),
        (ARRIVED, "a1"), (ANSWERED, "a1"),
        (ARRIVED, "a0"), (ANSWERED, "a0"),  # a duplicate after a kill: dropped by its id
        (ARRIVED, "b1"), (ANSWERED, "b1"), (ARRIVED, "a2"), (ANSWERED, "a2"),
    ]  # fmt: skip
    assert order_violations(in_order, users) == []
    out_of_order = [
        (ARRIVED, "a0"),  # refused (503): a0 is not answered 2xx...
        (ARRIVED, "a1"),  # ...so a1 must not come yet
        (ARRIVED, "b0"), (ARRIVED, "b1"),  # b1 while b0 is still in flight
        (ANSWERED, "b0"), (ANSWERED, "b1"),
        (ARRIVED, "a0"), (ANSWERED, "a0"), (ARRIVED, "a2"), (ANSWERED, "a2"),  # a2 skips a1
    ]  # fmt: skip
    assert order_violations(out_of_order, users) == [
        "user 0: #1 arrived while #0 was not answered 2xx",
        "user 1: #1 arrived while #0 was not answered 2xx",
        "user 0: #2 arrived while #1 was not answered 2xx",
    ]
