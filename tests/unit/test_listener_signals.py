"""What the listener tells the observer: batches consumed, commits, partitions owned, the input
lag after a commit interval, and the drain. A fake consumer stands in for Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

from consumer.config import KafkaConfig
from consumer.delivery import Owner
from consumer.listener import Listener
from consumer.observer import (
    CommitFailed,
    Committed,
    Consumed,
    Details,
    InputLag,
    Lifecycle,
    Observer,
    PartitionsOwned,
    Stage,
)

from .fakes import FakeConsumer, Record

INPUT = "user-threshold-events"
DELAY = "webhook-retry.5s"


class Finisher:
    """Finishes every record at once."""

    async def dispatch(self, records: Sequence[Any], owner: Owner) -> None:
        for record in records:
            owner.finished(record.offset)

    def flush(self) -> None:
        pass


@pytest.fixture
def world() -> tuple[Listener, FakeConsumer, list[Details]]:
    seen: list[Details] = []
    consumer = FakeConsumer()
    config = KafkaConfig(topic=INPUT, retry_topic_prefix="webhook-retry")
    observer = Observer([seen.append])
    listener = Listener(consumer, Finisher(), Finisher(), config, observer=observer)  # type: ignore[arg-type]
    return listener, consumer, seen


def tp(partition: int, topic: str = INPUT) -> TopicPartition:
    return TopicPartition(topic, partition)


async def assign(listener: Listener, consumer: FakeConsumer, *tps: TopicPartition) -> None:
    consumer.assigned |= set(tps)
    await listener.assigned(set(tps))


async def test_one_consumed_per_fetched_batch_by_topic_kind(
    world: tuple[Listener, FakeConsumer, list[Details]],
) -> None:
    listener, consumer, seen = world
    await assign(listener, consumer, tp(0), tp(0, DELAY))
    seen.clear()
    await listener._dispatch(tp(0), [Record(INPUT, 0, o, b"{}") for o in range(5)])
    await listener._dispatch(tp(0, DELAY), [Record(DELAY, 0, 0, b"{}")])
    assert seen == [Consumed("input", 5), Consumed("delay", 1)]


async def test_commits_and_failed_commits_with_their_time(
    world: tuple[Listener, FakeConsumer, list[Details]],
) -> None:
    listener, consumer, seen = world
    await assign(listener, consumer, tp(0), tp(1))
    await listener._dispatch(tp(0), [Record(INPUT, 0, 7, b"{}")])
    await listener._dispatch(tp(1), [Record(INPUT, 1, 3, b"{}")])
    seen.clear()
    consumer.commit_seconds = 0.05  # the broker takes this long to answer
    await listener.commit()
    await listener.commit()  # nothing moved: no commit, nothing said
    (committed,) = seen
    assert isinstance(committed, Committed)
    assert committed.partitions == 2
    assert committed.seconds >= 0.05  # the commit's own time, not the time of something else
    await listener._dispatch(tp(0), [Record(INPUT, 0, 8, b"{}")])
    consumer.fail_commits = True
    seen.clear()
    await listener.commit()
    (failed,) = [d for d in seen if not isinstance(d, Consumed)]
    assert isinstance(failed, CommitFailed)
    assert failed.seconds >= 0.05
    assert "RebalanceInProgressError" in failed.error


async def test_lag_of_owned_input_partitions_from_the_committed_offset_or_the_position(
    world: tuple[Listener, FakeConsumer, list[Details]],
) -> None:
    listener, consumer, seen = world
    await assign(listener, consumer, tp(0), tp(1), tp(2), tp(0, DELAY))
    consumer.ends = {tp(0): 100, tp(1): 50, tp(0, DELAY): 1000}  # partition 2 not fetched yet
    consumer.positions = {tp(1): 20}
    await listener._dispatch(tp(0), [Record(INPUT, 0, o, b"{}") for o in range(60)])
    await listener.commit()  # partition 0 committed at 60; partition 1 never read
    seen.clear()
    await listener._report_lag()
    assert seen == [InputLag(((0, 40), (1, 30)))]


async def test_partitions_owned_after_assignments_and_revokes(
    world: tuple[Listener, FakeConsumer, list[Details]],
) -> None:
    listener, consumer, seen = world
    await assign(listener, consumer, tp(0), tp(1), tp(0, DELAY))
    consumer.assigned -= {tp(1)}
    await listener.revoked({tp(1)})
    consumer.assigned -= {tp(0, DELAY)}
    await listener.revoked({tp(0, DELAY)})  # a delay partition: the input ones are unchanged
    owned = [d for d in seen if isinstance(d, PartitionsOwned)]
    assert owned == [
        PartitionsOwned(frozenset({0, 1}), assigned=True),
        PartitionsOwned(frozenset({0}), assigned=False),
        PartitionsOwned(frozenset({0}), assigned=False),
    ]
    seen.clear()
    await listener._report_lag()  # nothing fetched: nothing to say
    assert seen == []


async def test_the_drain_is_announced(world: tuple[Listener, FakeConsumer, list[Details]]) -> None:
    listener, _, seen = world
    await listener.drain(grace=0.1)
    assert seen[0] == Lifecycle(Stage.DRAINING)
