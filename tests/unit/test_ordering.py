"""`ordering: per_user` in a lane: one user's deliveries one at a time and in input order,
through retries in process, delay topics, open circuits, dead letters, and a second process
that learns from the order ledger; other users never wait. Scripted receivers and in-memory
sinks stand in for HTTP and Kafka."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from consumer.catalog import Catalog, Channel
from consumer.config import CircuitBreakerConfig, RetryConfig
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayedDelivery, DelayPath, MemoryDelaySink, delay_levels
from consumer.delivery import Delivery, Source, Ticket, delivery_id
from consumer.handoff import Handoff
from consumer.lanes import ChannelLane
from consumer.observer import Delayed, Details, Dropped, Observer
from consumer.ordering import UserOrder
from consumer.orderledger import ORDER_SEEN, MemoryLedgerSink, OrderLedger, parse_key
from consumer.outcome import Kind, Outcome, Wait, from_response
from consumer.sequencer import Unordered

from .fakes import FakeOwner

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

QUICK = RetryConfig(quick_attempts=3, backoff_initial_ms=1, backoff_max_ms=2, schedule_seconds=[])
SCHEDULED = QUICK.model_copy(update={"schedule_seconds": [60.0, 120.0]})
BREAKER = SCHEDULED.model_copy(
    update={"circuit_breaker": CircuitBreakerConfig(failures=3, cooldown_seconds=30)}
)
INPUT = "user-threshold-events"


class Receiver:
    """Answers each event as scripted (then 200), a little later, and records the order in
    which requests began and how many of one user were ever in flight at once."""

    def __init__(self, script: dict[str, list[int]] | None = None) -> None:
        self.script = {event: list(answers) for event, answers in (script or {}).items()}
        self.started: list[str] = []  # event ids, in the order their requests began
        self.delivered: list[str] = []
        self._open: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()
        self.gates: dict[str, asyncio.Event] = {}  # event id -> answer only once set

    async def send(self, delivery: Delivery) -> Outcome:
        event = delivery.events[0]
        user, event_id = event["user_id"], event["event_id"]
        self.started.append(event_id)
        self._open[user] += 1
        self.most_at_once[user] = max(self.most_at_once[user], self._open[user])
        try:
            gate = self.gates.get(event_id)
            if gate is not None:
                await gate.wait()
            await asyncio.sleep(0.002)  # long enough for other requests to overlap
        finally:
            self._open[user] -= 1
        answers = self.script.get(event_id)
        status = answers.pop(0) if answers else 200
        if status < 300:
            self.delivered.append(event_id)
        return from_response(status, None, f"status {status}")

    def of(self, *events: str) -> list[str]:
        """The requests begun for these events, in order."""
        return [e for e in self.started if e in events]


@dataclass
class Process:
    """One replica's lane for the channel, with its own view of the shared order topic."""

    lane: ChannelLane
    order: UserOrder
    ledger: OrderLedger
    delayed: MemoryDelaySink
    letters: MemoryDeadLetterSink
    events: list[Details] = field(default_factory=list)

    @property
    def records(self) -> list[DelayedDelivery]:
        return [record for _, record in self.delayed.written]

    def behind(self) -> list[str]:
        return [
            d.delivery.events[0]["event_id"]
            for d in self.events
            if isinstance(d, Delayed) and d.why is Wait.BEHIND
        ]


@asynccontextmanager
async def process(
    channel: Channel,
    receiver: Receiver,
    topic: MemoryLedgerSink,
    retry: RetryConfig = QUICK,
    max_held: int = 200,
) -> AsyncIterator[Process]:
    letters, delayed = MemoryDeadLetterSink(), MemoryDelaySink()
    dead_letters = DeadLetterWriter(letters)
    handoff = Handoff("delay")  # order facts and delay records, on one path as in service.py
    delays = DelayPath(delayed, "webhook-retry", delay_levels(retry), handoff=handoff)
    ledger = OrderLedger(topic, handoff)
    topic.replay_into(ledger)  # what a process reads at start
    seen: list[Details] = []
    observer = Observer([seen.append])
    order = UserOrder(channel.name, ledger, delays, max_held=max_held, observer=observer)
    lane = ChannelLane(
        channel,
        receiver,
        dead_letters,
        delays,
        retry,
        observer=observer,
        sequencer=order,
        rng=random.Random(7),
    )
    lane.start()
    try:
        yield Process(lane, order, ledger, delayed, letters, seen)
    finally:
        await lane.close()
        await delays.close()
        await dead_letters.close()


@pytest.fixture
def catalog(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Catalog:
    _, built = build_catalog([channel_cfg("crm", max_concurrency=4, ordering="per_user")])
    return built


@pytest.fixture
def channel(catalog: Catalog) -> Channel:
    return catalog.channels["crm"]


def delivery(channel: Channel, owner: FakeOwner, user: str, offset: int) -> Delivery:
    """Event e<offset> of `user`, read at that offset of input partition 0."""
    source = Source(INPUT, 0, offset)
    return Delivery(
        id=delivery_id(channel.name, [f"e{offset}"]),
        channel=channel,
        campaign_id="double11",
        template_param={},
        user_attr=[],
        events=[{"event_id": f"e{offset}", "user_id": user}],
        sources=[source],
        tickets=[Ticket(source, 1, owner)],
    )


def back(record: DelayedDelivery, catalog: Catalog, owner: FakeOwner, offset: int) -> Delivery:
    """A delay record read again at `offset` of its delay partition."""
    again = record.to_delivery(catalog)
    assert again is not None
    again.tickets.append(Ticket(Source("webhook-retry.60s", 0, offset), 1, owner))
    return again


def facts(topic: MemoryLedgerSink) -> list[tuple[str, bool]]:
    """The order topic as written: (event, True for a fact / False for its erasure)."""
    out = []
    for key, value in topic.records:
        parsed = parse_key(key)
        assert parsed is not None
        out.append((f"e{parsed[2][1]}", value is not None))
    return out


def events_of(records: list[DelayedDelivery]) -> list[str]:
    return [r.events[0]["event_id"] for r in records]


# In process


async def test_one_users_deliveries_go_one_at_a_time_in_input_order_while_the_first_retries(
    channel: Channel, wait_until: WaitUntil
) -> None:
    receiver = Receiver({"e0": [503, 503]})
    finished = FakeOwner()
    topic = MemoryLedgerSink()
    async with process(channel, receiver, topic) as p:
        for offset, user in [(0, "u1"), (1, "u2"), (2, "u1"), (3, "u2"), (4, "u1")]:
            p.lane.submit(delivery(channel, finished, user, offset))
        await wait_until(lambda: len(finished) == 5, what="every record finished")
        assert (p.records, p.letters.letters) == ([], [])
    assert receiver.of("e0", "e2", "e4") == ["e0", "e0", "e0", "e2", "e4"]
    assert receiver.most_at_once == {"u1": 1, "u2": 1}
    # The other user was not held back by the retries: both of u2's went before e0's third try.
    third_try = [i for i, e in enumerate(receiver.started) if e == "e0"][2]
    assert receiver.started.index("e3") < third_try
    assert topic.records == []  # kept in memory: nothing written to the order topic


async def test_a_dead_letter_releases_the_next_once_it_is_written(
    channel: Channel, wait_until: WaitUntil
) -> None:
    receiver = Receiver({"e0": [400]})
    finished = FakeOwner()
    async with process(channel, receiver, MemoryLedgerSink()) as p:
        for offset in range(3):
            p.lane.submit(delivery(channel, finished, "u1", offset))
        await wait_until(lambda: len(finished) == 3, what="every record finished")
        (letter,) = p.letters.letters
    assert letter.events == [{"event_id": "e0", "user_id": "u1"}]
    assert receiver.started == ["e0", "e1", "e2"]
    assert receiver.delivered == ["e1", "e2"]


async def test_the_next_of_a_user_goes_before_what_arrived_after_it(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    """It waited behind its user's earlier one, not behind the queue: one worker sends e1
    right after e0, before the other users' e2 and e3 that were queued meanwhile."""
    _, built = build_catalog([channel_cfg("crm", max_concurrency=1, ordering="per_user")])
    one_at_a_time = built.channels["crm"]
    receiver = Receiver()
    finished = FakeOwner()
    async with process(one_at_a_time, receiver, MemoryLedgerSink()) as p:
        for offset, user in [(0, "u1"), (1, "u1"), (2, "u2"), (3, "u3")]:
            p.lane.submit(delivery(one_at_a_time, finished, user, offset))
        await wait_until(lambda: len(finished) == 4, what="all delivered")
    assert receiver.started == ["e0", "e1", "e2", "e3"]


# Leaving the process, and coming back


async def test_when_the_first_leaves_for_a_delay_topic_those_behind_it_leave_with_it(
    channel: Channel, wait_until: WaitUntil
) -> None:
    receiver = Receiver({"e0": [503] * 3})
    receiver.gates["e0"] = gate = asyncio.Event()  # e0's first try answers once e1, e2 wait
    finished = FakeOwner()
    topic = MemoryLedgerSink()
    async with process(channel, receiver, topic, SCHEDULED) as p:
        for offset in range(3):
            p.lane.submit(delivery(channel, finished, "u1", offset))
        assert p.order.held == 2
        gate.set()
        await wait_until(lambda: len(finished) == 3, what="all three handed off")
        p.lane.submit(delivery(channel, finished, "u1", 3))  # arrives while e0 is away
        await wait_until(lambda: len(finished) == 4, what="the fourth handed off behind")
        records, keys, headers = p.records, p.delayed.keys, p.delayed.headers
        assert p.behind() == ["e1", "e2", "e3"]
    assert receiver.started == ["e0"] * 3
    assert events_of(records) == ["e0", "e1", "e2", "e3"]
    assert {t for t, _ in p.delayed.written[:3]} == {"webhook-retry.60s"}  # one topic...
    assert keys == [b"u1"] * 4  # ...and one partition of it: they come back in this order
    # Each fact was durable before any delay record; a record says how far its writer read.
    assert facts(topic) == [("e0", True), ("e1", True), ("e2", True), ("e3", True)]
    assert [dict(h)[ORDER_SEEN] for h in headers] == [b"3", b"3", b"3", b"4"]
    due_of_first = records[0].due_ms
    assert abs(records[3].due_ms - due_of_first) < 1500  # back when the first one is due


async def test_back_from_the_delay_topic_the_first_goes_and_the_rest_follow_one_by_one(
    catalog: Catalog, channel: Channel, wait_until: WaitUntil
) -> None:
    topic = MemoryLedgerSink()
    away = FakeOwner()
    async with process(channel, Receiver({"e0": [503] * 3}), topic, SCHEDULED) as first:
        for offset in range(3):
            first.lane.submit(delivery(channel, away, "u1", offset))
        await wait_until(lambda: len(away) == 3, what="handed off")
        records = first.records
    receiver = Receiver()
    again = FakeOwner()
    async with process(channel, receiver, topic) as second:  # another replica reads them back
        for offset, record in enumerate(records):
            second.lane.submit(back(record, catalog, again, offset))
        await wait_until(lambda: len(again) == 3, what="delivered")
        other = FakeOwner()
        second.lane.submit(delivery(channel, other, "u1", 3))  # nothing earlier left
        await wait_until(lambda: other == [3], what="the next event went straight")
        view = dict(second.ledger.channel("crm"))
    assert receiver.started == ["e0", "e1", "e2", "e3"]
    assert receiver.most_at_once == {"u1": 1}
    # Every fact erased (after its delivery), and the fresh event wrote none.
    assert facts(topic)[3:] == [("e0", False), ("e1", False), ("e2", False)]
    assert view == {}


async def test_another_process_sends_a_later_delivery_behind_an_unfinished_earlier_one(
    catalog: Catalog, channel: Channel, wait_until: WaitUntil
) -> None:
    """A rebalance: e0 waits on a delay topic (its input offset committed); e1 of the same
    user is read by another replica, which learns of e0 from the order topic."""
    topic = MemoryLedgerSink()
    owner = FakeOwner()
    async with process(channel, Receiver({"e0": [503] * 3}), topic, SCHEDULED) as first:
        first.lane.submit(delivery(channel, owner, "u1", 0))
        await wait_until(lambda: owner == [0], what="e0 handed off")
        (e0,) = first.records
        ((e0_topic, _),) = first.delayed.written
    receiver = Receiver()
    async with process(channel, receiver, topic, SCHEDULED) as second:
        second.lane.submit(delivery(channel, owner, "u1", 1))
        second.lane.submit(delivery(channel, owner, "u2", 2))  # another user goes at once
        await wait_until(lambda: sorted(owner) == [0, 1, 2], what="e1 behind, e2 delivered")
        assert receiver.started == ["e2"]
        (e1,) = second.records
        assert second.behind() == ["e1"]
        # Beside e0: same topic, same partition (key), due at the same moment, so it comes
        # back right behind it, to whichever replica reads that partition.
        assert (e1.due_ms, second.delayed.written[0][0]) == (e0.due_ms, e0_topic)
        assert second.delayed.keys == [b"u1"]
        # e1 comes back before e0 has ended: it waits again, it does not overtake.
        second.lane.submit(back(e1, catalog, owner, 10))
        await wait_until(lambda: 10 in owner, what="e1 waited again")
        assert receiver.started == ["e2"]
        # e0 comes back and is delivered; then e1 goes.
        second.lane.submit(back(e0, catalog, owner, 11))
        (_, e1_again) = second.records
        second.lane.submit(back(e1_again, catalog, owner, 12))
        await wait_until(lambda: receiver.started == ["e2", "e0", "e1"], what="in order")
        await wait_until(lambda: 12 in owner, what="e1 finished")


async def test_an_open_circuit_sends_each_user_out_and_keeps_them_apart(
    channel: Channel, wait_until: WaitUntil
) -> None:
    receiver = Receiver()
    finished = FakeOwner()
    topic = MemoryLedgerSink()
    async with process(channel, receiver, topic, BREAKER) as p:
        for _ in range(BREAKER.circuit_breaker.failures):
            p.lane.breaker.record(failure=True)
        for offset, user in [(0, "u1"), (1, "u1"), (2, "u2"), (3, "u1")]:
            p.lane.submit(delivery(channel, finished, user, offset))
        await wait_until(lambda: len(finished) == 4, what="all wait on the delay path")
        records, keys = p.records, p.delayed.keys
        assert p.behind() == ["e1", "e3"]  # u2's first is nobody's follower
    assert receiver.started == []
    by_user = {
        user: [e for e, key in zip(events_of(records), keys, strict=True) if key == user]
        for user in (b"u1", b"u2")
    }
    assert by_user == {b"u1": ["e0", "e1", "e3"], b"u2": ["e2"]}
    assert [fact for fact, _ in facts(topic)] == ["e0", "e1", "e2", "e3"]
    due = {r.events[0]["event_id"]: r.due_ms for r in records}
    assert due["e0"] <= due["e1"] <= due["e3"]  # behind e0, not before it


# Bounds and give-ups


async def test_a_chain_held_in_memory_is_bounded_and_documented_before_any_of_it_leaves(
    channel: Channel, wait_until: WaitUntil
) -> None:
    receiver = Receiver()
    receiver.gates["e0"] = gate = asyncio.Event()
    finished = FakeOwner()
    topic = MemoryLedgerSink()
    async with process(channel, receiver, topic, max_held=2) as p:
        for offset in range(5):
            p.lane.submit(delivery(channel, finished, "u1", offset))
        await wait_until(lambda: sorted(finished) == [3, 4], what="e3, e4 handed off behind")
        assert p.order.held == 2
        # Before e3 left, e0 (in flight), e1 and e2 (held) were written down, in order.
        assert facts(topic) == [(f"e{i}", True) for i in range(5)]
        gate.set()
        await wait_until(lambda: len(finished) == 5, what="e0..e2 delivered")
        assert p.behind() == ["e3", "e4"]
        assert events_of(p.records) == ["e3", "e4"]
    assert receiver.started == ["e0", "e1", "e2"]
    assert facts(topic)[5:] == [("e0", False), ("e1", False), ("e2", False)]


async def test_a_head_dropped_on_revoke_takes_its_partitions_followers_with_it(
    channel: Channel, wait_until: WaitUntil
) -> None:
    receiver = Receiver({"e0": [503]})
    receiver.gates["e0"] = gate = asyncio.Event()
    revoked = FakeOwner()
    async with process(channel, receiver, MemoryLedgerSink()) as p:
        for offset in range(3):
            p.lane.submit(delivery(channel, revoked, "u1", offset))
        revoked.revoked = True  # the partition moves while e0 is in flight
        gate.set()
        await wait_until(lambda: p.order.held == 0 and not p.lane.in_flight, what="dropped")
        dropped = [d for d in p.events if isinstance(d, Dropped)]
        fresh = FakeOwner()  # the same events again, as their next owner would read them
        for offset in range(3):
            p.lane.submit(delivery(channel, fresh, "u1", offset))
        await wait_until(lambda: len(fresh) == 3, what="delivered by the next owner")
    assert len(dropped) == 3
    assert revoked == []
    assert receiver.started == ["e0", "e0", "e1", "e2"]


async def test_a_removed_channel_dead_letters_what_it_held_back(
    channel: Channel, wait_until: WaitUntil
) -> None:
    receiver = Receiver()
    receiver.gates["e0"] = gate = asyncio.Event()
    finished = FakeOwner()
    async with process(channel, receiver, MemoryLedgerSink()) as p:
        for offset in range(3):
            p.lane.submit(delivery(channel, finished, "u1", offset))
        gone = Outcome(Kind.UNKNOWN_CHANNEL, retryable=False, message="removed")
        retiring = asyncio.create_task(p.lane.retire(gone, within=5))
        await wait_until(lambda: sorted(finished) == [1, 2], what="the held ones dead-lettered")
        gate.set()
        await retiring
        letters = [letter.events[0]["event_id"] for letter in p.letters.letters]
    assert letters == ["e1", "e2"]
    assert receiver.started == ["e0"]


async def test_a_channel_no_longer_ordered_erases_the_facts_left_from_when_it_was(
    channel: Channel, wait_until: WaitUntil
) -> None:
    """Turned back to per_user later, it must not find its users held back for ever."""
    topic = MemoryLedgerSink()
    owner = FakeOwner()
    async with process(channel, Receiver({"e0": [503] * 3}), topic, SCHEDULED) as ordered:
        ordered.lane.submit(delivery(channel, owner, "u1", 0))
        await wait_until(lambda: owner == [0], what="e0 waits on the delay path")
    handoff = Handoff("delay")
    ledger = OrderLedger(topic, handoff)
    topic.replay_into(ledger)
    delays = DelayPath(MemoryDelaySink(), "webhook-retry", delay_levels(QUICK), handoff=handoff)
    letters = DeadLetterWriter(MemoryDeadLetterSink())
    lane = ChannelLane(
        channel, Receiver(), letters, delays, QUICK, sequencer=Unordered(delays, ledger, "crm")
    )
    lane.start()
    try:
        lane.submit(delivery(channel, owner, "u1", 0))  # back, now to a lane without order
        await wait_until(lambda: owner == [0, 0], what="delivered")
    finally:
        await lane.close()
        await delays.close()
        await letters.close()
    assert ledger.channel("crm") == {}
    assert facts(topic) == [("e0", True), ("e0", False)]
