"""The order ledger: facts in the view at once and durable in order, `after` only once a
user's writes are all acknowledged, and a follower that never undoes a newer write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
from aiokafka.errors import KafkaTimeoutError

from consumer.handoff import Handoff
from consumer.orderledger import (
    Fact,
    LedgerSink,
    MemoryLedgerSink,
    OrderLedger,
    encode_fact,
    fact_key,
    parse_key,
)

if TYPE_CHECKING:
    from .conftest import WaitUntil

Ledgers = Callable[..., OrderLedger]
FACT = Fact(due_ms=1_000, created_ms=500, delivery_id="d-1")
KEY = fact_key("crm", "u1", (0, 7))


class HeldAcks:
    """A topic whose writes are acknowledged only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []
        self._acks: list[asyncio.Future[int]] = []

    async def send(self, key: bytes, value: bytes | None) -> Awaitable[int]:
        self.sent.append((key, value))
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks.append(ack)
        return ack

    def ack(self, index: int, offset: int) -> None:
        self._acks[index].set_result(offset)

    def fail(self, index: int) -> None:
        self._acks[index].set_exception(KafkaTimeoutError())


@pytest.fixture
async def ledgers() -> AsyncIterator[Ledgers]:
    """Ledgers closed at the end of the test: no write is left half done."""
    made: list[OrderLedger] = []

    def make(topic: LedgerSink, handoff: Handoff | None = None) -> OrderLedger:
        made.append(OrderLedger(topic, handoff))
        return made[-1]

    yield make
    for ledger in made:
        await ledger.close()


def test_keys_round_trip_and_strays_are_ignored() -> None:
    assert parse_key(fact_key("crm", "ü\n1", (2, 99))) == ("crm", "ü\n1", (2, 99))
    for stray in (None, b"", b"not json", b'["crm", "u1", 0]', b'["crm", 1, 0, 7]'):
        assert parse_key(stray) is None


async def test_a_fact_is_in_the_view_at_once_and_on_the_topic_once_written(
    wait_until: WaitUntil, ledgers: Ledgers
) -> None:
    topic = MemoryLedgerSink()
    ledger = ledgers(topic)
    ledger.record("crm", "u1", (0, 7), FACT)
    assert ledger.channel("crm") == {"u1": {(0, 7): FACT}}
    await wait_until(lambda: ledger.seen() == 1, what="written")
    finished: list[str] = []
    ledger.erase("crm", "u1", (0, 7), lambda: finished.append("u1"))
    assert ledger.channel("crm") == {}
    await wait_until(lambda: finished == ["u1"], what="erasure durable")
    assert topic.records == [(KEY, encode_fact(FACT)), (KEY, None)]
    other = ledgers(MemoryLedgerSink())  # another process, reading the topic from the start
    assert topic.replay_into(other) == 2
    assert other.channel("crm") == {}
    assert (other.caught_up(2), other.caught_up(3)) == (True, False)


async def test_after_waits_for_every_write_of_the_user_even_one_tried_again(
    wait_until: WaitUntil, ledgers: Ledgers
) -> None:
    topic = HeldAcks()
    ledger = ledgers(topic, Handoff("delay", initial_backoff=0.001, max_backoff=0.002))
    ran: list[str] = []
    ledger.record("crm", "u1", (0, 1), FACT)
    ledger.record("crm", "u1", (0, 2), FACT)
    ledger.after("crm", "u1", lambda: ran.append("u1"))
    ledger.record("crm", "u2", (0, 3), FACT)
    ledger.after("crm", "u2", lambda: ran.append("u2"))
    await wait_until(lambda: len(topic.sent) == 3, what="all three handed to the topic")
    topic.fail(0)  # the broker lost u1's first write: it is tried again, after the others
    topic.ack(1, offset=11)
    topic.ack(2, offset=12)
    await wait_until(lambda: ran == ["u2"], what="u2's only write acknowledged")
    await wait_until(lambda: len(topic.sent) == 4, what="u1's first write tried again")
    assert ran == ["u2"]  # u1's second write alone is not enough
    topic.ack(3, offset=13)
    await wait_until(lambda: ran == ["u2", "u1"], what="both of u1's acknowledged")
    assert ledger.seen() == 14  # what a reader of a record written now must have read
    ledger.after("crm", "u1", lambda: ran.append("now"))  # nothing in flight: at once
    assert ran[-1] == "now"


async def test_the_follower_never_undoes_a_newer_write_of_this_process(
    wait_until: WaitUntil, ledgers: Ledgers
) -> None:
    ledger = ledgers(MemoryLedgerSink())
    older = Fact(due_ms=1, created_ms=1, delivery_id="d-0")
    ledger.apply(KEY, encode_fact(older), 0)  # read at start
    ledger.apply(KEY, None, 1)
    ledger.record("crm", "u1", (0, 7), FACT)  # written again later (by us)
    ledger.apply(KEY, None, 1)  # an old erasure read late must not undo it
    assert ledger.channel("crm") == {"u1": {(0, 7): FACT}}
    await wait_until(lambda: ledger.seen() == 2, what="ours written")
    ledger.apply(KEY, None, 1)  # nor after ours is acknowledged
    assert ledger.channel("crm") == {"u1": {(0, 7): FACT}}


@pytest.mark.parametrize(
    ("ours", "expected"),
    [(5, {}), (20, {"u1": {(0, 7): FACT}})],
    ids=["theirs-newer", "ours-newer"],
)
async def test_a_record_of_another_process_read_while_ours_is_in_flight_wins_if_newer(
    ours: int, expected: dict[str, object], wait_until: WaitUntil, ledgers: Ledgers
) -> None:
    topic = HeldAcks()
    ledger = ledgers(topic)
    acknowledged: list[bool] = []
    ledger.record("crm", "u1", (0, 7), FACT)
    ledger.after("crm", "u1", lambda: acknowledged.append(True))
    ledger.apply(KEY, None, 9)  # another process erased it while ours was in flight
    assert ledger.channel("crm") == {"u1": {(0, 7): FACT}}  # undecided yet
    await wait_until(lambda: bool(topic.sent), what="handed to the topic")
    topic.ack(0, offset=ours)
    await wait_until(lambda: bool(acknowledged), what="acknowledged")
    assert ledger.channel("crm") == expected


@pytest.mark.parametrize("value", [b"{}", b"not json", b'{"due_ms": "x"}'])
def test_a_value_that_is_not_a_fact_changes_nothing(value: bytes, ledgers: Ledgers) -> None:
    ledger = ledgers(MemoryLedgerSink())
    ledger.apply(KEY, encode_fact(FACT), 0)
    ledger.apply(KEY, value, 1)
    assert ledger.channel("crm") == {"u1": {(0, 7): FACT}}
    assert ledger.caught_up(2)
