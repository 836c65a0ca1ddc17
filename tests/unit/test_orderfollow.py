"""The order topic's follower: it reads into the ledger, `catch_up` returns once the ledger
has read what was written before it was called, and a follower that dies says so (the
service stops) instead of holding ordered records back unseen. A fake consumer stands in for
Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from consumer.orderfollow import LedgerFollower
from consumer.orderledger import Fact, MemoryLedgerSink, OrderLedger, encode_fact, fact_key

if TYPE_CHECKING:
    from .conftest import WaitUntil

TOPIC = "webhook-consumer.order"
TP = TopicPartition(TOPIC, 0)
FACT = Fact(due_ms=1_000, created_ms=500, delivery_id="d-1", level=5.0)


@dataclass(frozen=True)
class Written:
    key: bytes
    value: bytes | None
    offset: int


class FakeTopic:
    """One partition: what is written is fetched, a batch per getmany, in order."""

    def __init__(self, broken: bool = False) -> None:
        self.records: list[Written] = []
        self._position = 0
        self._broken = broken
        self.arrived = asyncio.Event()

    def write(self, key: bytes, value: bytes | None) -> None:
        self.records.append(Written(key, value, len(self.records)))
        self.arrived.set()

    async def start(self) -> None: ...

    def assign(self, partitions: Sequence[TopicPartition]) -> None: ...

    async def seek_to_beginning(self, partition: TopicPartition) -> None:
        self._position = 0

    async def getmany(self, partition: TopicPartition, timeout_ms: int) -> dict[Any, Any]:
        if self._broken:
            raise RuntimeError("a bug in the follower")
        if self._position >= len(self.records):
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout_ms / 1000)
            except TimeoutError:
                return {}
        batch = self.records[self._position :]
        self._position = len(self.records)
        return {TP: batch}

    async def position(self, partition: TopicPartition) -> int:
        return self._position

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[Any, int]:
        return {TP: len(self.records)}

    async def stop(self) -> None: ...


async def test_the_ledger_follows_the_topic_and_catch_up_waits_for_its_end(
    wait_until: WaitUntil,
) -> None:
    topic = FakeTopic()
    key = fact_key("crm", "u1", (0, 7))
    topic.write(key, encode_fact(FACT))  # written by another replica before this one started
    ledger = OrderLedger(MemoryLedgerSink())
    follower = LedgerFollower(topic, TOPIC, ledger)
    await follower.start()
    try:
        await asyncio.wait_for(follower.catch_up(), 5)
        assert ledger.channel("crm") == {"u1": {(0, 7): FACT}}
        topic.write(key, None)  # erased elsewhere: the view follows
        await asyncio.wait_for(follower.catch_up(), 5)
        assert ledger.channel("crm") == {}
        assert ledger.caught_up(2)
    finally:
        await follower.close()


async def test_a_follower_that_dies_stops_the_service(wait_until: WaitUntil) -> None:
    stopped: list[BaseException] = []
    follower = LedgerFollower(
        FakeTopic(broken=True), TOPIC, OrderLedger(MemoryLedgerSink()), stopped.append
    )
    await follower.start()
    try:
        await wait_until(lambda: bool(stopped), what="the service told")
        assert "a bug in the follower" in repr(stopped[0])
    finally:
        await follower.close()
