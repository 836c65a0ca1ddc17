"""The replica count the fallback divides by: only a Stable group's answer counts, never 0,
and a replica starts from a count that errs high, never from 1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from structlog.testing import capture_logs

from consumer.config import KafkaConfig
from consumer.fleet import replicas as replicas_module
from consumer.fleet.replicas import GroupMembers, members_with_partitions
from consumer.observer import PartitionsOwned

from .conftest import WaitUntil

NOT_COORDINATOR, LOAD_IN_PROGRESS = 16, 14


def member(*partitions: int) -> tuple[str, str, str, bytes, bytes]:
    assigned = [("events", list(partitions))] if partitions else []
    raw = ConsumerProtocolMemberAssignment(0, assigned, b"").encode() if assigned else b""
    return ("member", "client", "/127.0.0.1", b"", raw)


def group(state: str, *members: tuple[str, str, str, bytes, bytes], error: int = 0) -> Any:
    return (error, "g", state, "consumer", "roundrobin", list(members))


STABLE_2 = group("Stable", member(0, 1, 2), member(3, 4, 5))
STABLE_3 = group("Stable", member(0, 1), member(2, 3), member(4, 5))
# A rebalance under way: the members are listed, their assignments not yet.
REBALANCING = group("PreparingRebalance", member(), member(), member())
COMPLETING = group("CompletingRebalance", member(), member(), member())
MOVING = group("", error=NOT_COORDINATOR)  # the coordinator moved: no members at all
LOADING = group("", error=LOAD_IN_PROGRESS)


@pytest.mark.parametrize(
    ("described", "count"),
    [
        (STABLE_2, 2),
        (STABLE_3, 3),
        (REBALANCING, None),
        (COMPLETING, None),
        (MOVING, None),
        (LOADING, None),
        (group("Stable", member(), member()), None),  # nobody holds a partition: not 0
        (group("Stable", member(0), member()), 1),  # an idle member takes no share
    ],
)
def test_only_a_stable_group_is_counted(described: Any, count: int | None) -> None:
    assert members_with_partitions(described) == count


@dataclass
class Answer:
    groups: list[Any]


class Admin:
    """An admin client that answers the scripted descriptions in turn (the last one again
    and again), and notes the count the members had when each was asked for."""

    def __init__(self, members: GroupMembers, partitions: int, answers: list[Any]) -> None:
        self.members = members
        self.partitions = partitions
        self.answers: Iterator[Any] = iter(answers)
        self.seen: list[int] = []
        self.done = asyncio.Event()

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [{"error_code": 0, "partitions": [{"partition": p} for p in range(self.partitions)]}]

    async def describe_consumer_groups(self, groups: list[str]) -> list[Answer]:
        self.seen.append(self.members.count())
        answer = next(self.answers, None)
        if answer is None:
            self.done.set()
            raise RuntimeError("no more answers")
        return [Answer([answer])]

    async def close(self) -> None:
        return None


class Memory:
    def __init__(self, last: int | None) -> None:
        self._last = last
        self.remembered: list[int] = []

    async def last(self) -> int | None:
        return self._last

    async def remember(self, count: int) -> None:
        self.remembered.append(count)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replicas_module, "_FIRST_REFRESH", 0.001)
    monkeypatch.setattr(replicas_module, "_UNSETTLED_REFRESH", 0.001)


async def counted(
    answers: list[Any], partitions: int = 6, memory: Memory | None = None
) -> tuple[list[int], int, list[dict[str, Any]]]:
    """The count before each answer, the count after the last, and the log lines."""
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topic="events")
    members = GroupMembers(kafka, {}, refresh_seconds=0.001, memory=memory)
    admin = Admin(members, partitions, answers)

    async def started() -> Admin:
        return admin

    members._started_admin = started  # type: ignore[assignment,method-assign]
    with capture_logs() as logs:
        members.start()
        await asyncio.wait_for(admin.done.wait(), 5)
        await members.close()
    return admin.seen, members.count(), logs


async def test_a_rebalance_never_lowers_the_count() -> None:
    seen, last, logs = await counted(
        [STABLE_2, STABLE_2, REBALANCING, MOVING, COMPLETING, LOADING, STABLE_3, REBALANCING]
    )
    # Before the first Stable answer: the input topic's 6 partitions, never 1; fewer once two
    # Stable answers in a row agree; more at once.
    assert seen == [6, 6, 2, 2, 2, 2, 2, 3, 3]
    assert last == 3
    changes = [line["replicas"] for line in logs if line["event"] == "rate_limiter.replicas"]
    assert changes == [6, 2, 3]  # each change said once


async def test_a_group_still_forming_is_not_counted_by_its_first_member() -> None:
    """Three replicas start together: for a moment the group is Stable with the first one
    alone, before the others join. That moment must not make anyone divide by 1."""
    alone = group("Stable", member(0, 1, 2, 3, 4, 5))
    seen, last, _ = await counted([alone, REBALANCING, COMPLETING, STABLE_3, STABLE_3])
    assert min(seen) >= 3
    assert last == 3


async def test_a_replica_that_left_is_counted_out_once_confirmed() -> None:
    seen, last, _ = await counted([STABLE_3, STABLE_3, STABLE_2, STABLE_2])
    assert seen == [6, 6, 3, 3, 2]  # the count before each answer, and after the last
    assert last == 2


async def test_a_replica_that_starts_during_a_rebalance_assumes_the_partition_count() -> None:
    seen, last, _ = await counted([REBALANCING, MOVING, REBALANCING], partitions=12)
    assert set(seen) == {12}
    assert last == 12


async def test_a_new_replica_starts_one_above_what_the_fleet_counted_last() -> None:
    memory = Memory(last=2)
    seen, last, _ = await counted([REBALANCING, STABLE_3], partitions=12, memory=memory)
    assert seen[0] == 3  # the fleet's 2, and this replica joining
    assert last == 3
    assert memory.remembered == [3]  # for the replicas that start later


async def test_a_rebalance_of_its_own_makes_a_replica_count_the_group_again(
    monkeypatch: pytest.MonkeyPatch, wait_until: WaitUntil
) -> None:
    """Settled, a replica asks ever more rarely (here: not again within the test). A replica
    joining rebalances the group, and each member hears of it (its partitions are assigned
    again): it counts the group at once."""
    monkeypatch.setattr(replicas_module, "_FIRST_REFRESH", 60.0)
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:1", group_id="g", topic="events")
    members = GroupMembers(kafka, {}, refresh_seconds=60)
    admin = Admin(members, 6, [STABLE_2, STABLE_2, STABLE_3])

    async def started() -> Admin:
        return admin

    members._started_admin = started  # type: ignore[assignment,method-assign]
    members.start()
    try:
        await wait_until(lambda: members.count() == 2, what="two replicas counted")
        members.heard(PartitionsOwned(frozenset({0, 1}), assigned=True))
        await wait_until(lambda: members.count() == 3, what="counted again, not in 60 s")
    finally:
        await members.close()
