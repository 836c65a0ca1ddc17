"""Idle delay partitions rest between peeks; nothing with records to read ever rests."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition

from consumer.delaypath import level_of
from consumer.resting import Resting

PREFIX = "g.retry"
LEVELS = (5.0, 20.0, 80.0, 300.0)
INPUT = TopicPartition("events", 0)
LOWEST = TopicPartition(f"{PREFIX}.5s", 0)
TWENTY = TopicPartition(f"{PREFIX}.20s", 0)  # peeks every 0.5 s
EIGHTY = TopicPartition(f"{PREFIX}.80s", 1)  # peeks every 2 s


@dataclass
class Broker:
    """What aiokafka's consumer would say: fetch answers (wall ms) and end offsets."""

    assigned: set[TopicPartition] = field(default_factory=set)
    answered: dict[TopicPartition, int] = field(default_factory=dict)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    paused: set[TopicPartition] = field(default_factory=set)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    def highwater(self, partition: TopicPartition) -> int | None:
        assert partition in self.assigned
        return self.ends.get(partition)

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        assert partition in self.assigned
        return self.answered.get(partition)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)


class World:
    def __init__(self, *partitions: TopicPartition) -> None:
        self.now = 1000.0  # seconds, both clocks
        self.broker = Broker(set(partitions))
        self.positions: dict[TopicPartition, int] = {}
        self.held: set[TopicPartition] = set()
        self.resting = Resting(
            self.broker,
            LEVELS,
            lambda topic: level_of(topic, PREFIX),
            self.positions.get,
            lambda tp: tp in self.held,
            clock=lambda: self.now,
            wall_ms=lambda: int(self.now * 1000),
        )
        self.resting.assigned(partitions)

    def answer(self, *partitions: TopicPartition, end: int = 0) -> None:
        """A fetch answer for these partitions, now, saying where they end."""
        for tp in partitions:
            self.broker.answered[tp] = int(self.now * 1000)
            self.broker.ends[tp] = end

    def later(self, seconds: float) -> None:
        self.now += seconds
        self.resting.tick()


@pytest.mark.parametrize(
    ("level", "interval"), [(5.0, None), (20.0, 0.5), (80.0, 2.0), (150.0, 8.0), (300.0, 8.0)]
)
def test_a_level_peeks_every_tenth_of_the_level_below(level: float, interval: float | None) -> None:
    # A wait rides the shortest level covering it: a record on a level waits longer than the
    # level below, so it is read long before it is due. 150: a level another config retired.
    assert World().resting.peek_interval(level) == interval


def test_an_idle_delay_partition_rests_and_peeks_on_time() -> None:
    w = World(INPUT, LOWEST, TWENTY, EIGHTY)
    w.later(0.2)
    w.answer(INPUT, LOWEST, TWENTY, EIGHTY)  # empty everywhere
    w.later(0.2)
    # The input and the lowest level (waits of any length) never rest.
    assert w.broker.paused == {TWENTY, EIGHTY}
    w.later(0.45)
    assert w.broker.paused == {TWENTY, EIGHTY}
    w.later(0.1)  # 0.55 s after it rested: the 20 s level's peek is due
    assert w.broker.paused == {EIGHTY}
    w.later(0.2)
    assert w.broker.paused == {EIGHTY}, "rested again before any fetch answered for it"
    w.answer(TWENTY)
    w.later(0.2)
    assert w.broker.paused == {TWENTY, EIGHTY}
    w.later(1.0)  # 1.95 s since the 80 s level rested
    assert EIGHTY in w.broker.paused
    w.later(0.1)  # 2.05 s: its peek is due
    assert EIGHTY not in w.broker.paused


def test_records_to_read_keep_a_partition_awake() -> None:
    w = World(TWENTY, EIGHTY)
    w.positions[TWENTY] = 40
    w.later(0.2)
    w.answer(TWENTY, end=41)  # one record fetched, not handed on yet
    w.answer(EIGHTY, end=7)  # records, and this member never read or committed any of them
    w.later(0.2)
    assert w.broker.paused == set()
    w.resting.read(TWENTY)
    w.positions[TWENTY] = 41
    w.later(0.2)
    assert w.broker.paused == set(), "read after the last answer: wait for the next one"
    w.answer(TWENTY, end=41)
    w.later(0.2)
    assert w.broker.paused == {TWENTY}


def test_a_partition_the_listener_holds_back_is_left_to_it() -> None:
    w = World(TWENTY)
    w.held.add(TWENTY)
    w.later(0.2)
    w.answer(TWENTY)
    w.later(0.2)
    assert w.broker.paused == set()


def test_revoked_and_unassigned_partitions_are_not_touched() -> None:
    w = World(TWENTY, EIGHTY)
    w.later(0.2)
    w.answer(TWENTY, EIGHTY)
    w.resting.revoked([TWENTY])
    w.broker.assigned.discard(EIGHTY)  # gone without a revoke yet: aiokafka asserts on it
    w.later(0.2)
    assert w.broker.paused == set()


def test_a_new_assignment_starts_awake() -> None:
    w = World(TWENTY)
    w.later(0.2)
    w.answer(TWENTY)
    w.later(0.2)
    assert w.broker.paused == {TWENTY}
    w.resting.revoked([TWENTY])
    w.broker.resume(TWENTY)  # as aiokafka forgets pauses across an assignment
    w.resting.assigned([TWENTY])
    w.later(0.2)
    assert w.broker.paused == set(), "no fetch has answered since it was assigned"
    w.answer(TWENTY)
    w.later(0.2)
    assert w.broker.paused == {TWENTY}, "it rests again, as any awake partition would"
