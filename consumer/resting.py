"""Delay partitions with nothing to read rest between peeks instead of riding every fetch.

A deployment reads a partition of every delay level (eight by default) beside its input,
and at a steady low rate every fetch plans, requests and answers for all of them: a fifth
of the service's CPU for partitions that are empty nearly all the time. A delay partition
read to its end rests (is paused) and is resumed for one fetch answer now and then.

The peek interval keeps the delay path's promise: a wait rides the shortest level that
covers it, so a record on level L waits longer than the level below L; peeking every tenth
of that reads the record long before it is due (the listener holds it in memory until then),
so no record comes back later for having rested. The lowest level, whose waits can be as
short as anything, never rests.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition

PEEK_FRACTION = 0.1  # of the level below: how often a resting partition looks for records
_CHECK_SECONDS = 0.1  # how often partitions are looked at: not every fetch


class Fetching(Protocol):
    """The part of aiokafka's consumer this needs."""

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None: ...


@dataclass(slots=True)
class _Partition:
    peek_every: float
    awake_since_ms: int  # wall clock, as aiokafka stamps its fetch answers
    wake_at: float | None = None  # monotonic; set while resting


class Resting:
    """Which delay partitions rest, and when each peeks. `level_of` gives a topic's delay
    (None for the input topic); `position` the offset the listener reads next (None before
    it knows); `held` whether the listener paused the partition itself (too much unfinished):
    that pause is the listener's to lift, so such a partition is left alone."""

    def __init__(
        self,
        consumer: Fetching,
        levels: Sequence[float],
        level_of: Callable[[str], float | None],
        position: Callable[[TopicPartition], int | None],
        held: Callable[[TopicPartition], bool],
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._consumer = consumer
        self._levels = sorted(levels)
        self._level_of = level_of
        self._position = position
        self._held = held
        self._clock = clock
        self._wall_ms = wall_ms
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._next_check = 0.0

    def peek_interval(self, level: float) -> float | None:
        """None for a level no shorter wait rides below (it never rests)."""
        below = self._levels[: bisect_left(self._levels, level)]
        return below[-1] * PEEK_FRACTION if below else None

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            level = self._level_of(tp.topic)
            interval = None if level is None else self.peek_interval(level)
            if interval is not None:
                self._partitions[tp] = _Partition(interval, self._wall_ms())

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.pop(tp, None)

    def read(self, tp: TopicPartition) -> None:
        """Records of it came: it stays awake until a fetch answers after this."""
        partition = self._partitions.get(tp)
        if partition is not None:
            partition.awake_since_ms = self._wall_ms()

    def tick(self) -> None:
        """Between fetches: wake the partitions whose peek is due, rest the idle ones."""
        now = self._clock()
        if now < self._next_check or not self._partitions:
            return
        self._next_check = now + _CHECK_SECONDS
        assigned = self._consumer.assignment()  # aiokafka asserts it for what is asked below
        waking, resting = [], []
        for tp, partition in self._partitions.items():
            if tp not in assigned:
                continue
            if partition.wake_at is not None:
                if now >= partition.wake_at:
                    partition.wake_at = None
                    partition.awake_since_ms = self._wall_ms()
                    waking.append(tp)
            elif self._idle(tp, partition):
                partition.wake_at = now + partition.peek_every
                resting.append(tp)
        if waking:
            self._consumer.resume(*waking)
        if resting:
            self._consumer.pause(*resting)

    def _idle(self, tp: TopicPartition, partition: _Partition) -> bool:
        """Read to its end, as a fetch answered since it last woke or was read says."""
        answered = self._consumer.last_poll_timestamp(tp)
        if answered is None or answered <= partition.awake_since_ms or self._held(tp):
            return False
        end, position = self._consumer.highwater(tp), self._position(tp)
        # An end beyond the position: records are on their way to getmany, or still to fetch.
        return end is not None and (end == 0 or (position is not None and end <= position))
