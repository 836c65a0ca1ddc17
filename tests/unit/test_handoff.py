"""Hand-offs that can never be written (too large) end in a smaller dead letter, not a stall."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from consumer.deadletter import DeadLetter, DeadLetterWriter, for_record
from consumer.delaypath import DelayPath
from consumer.delivery import Delivery, Source, delivery_id
from consumer.handoff import ACKNOWLEDGED, Acknowledged, Handoff
from consumer.observer import HandoffChanged, Observer
from consumer.outcome import Kind, Outcome

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

SOURCE = Source("events", 0, 7)
LIMIT = 2_000  # bytes a fake broker accepts per record


class SizeLimitedSink:
    """Refuses records over LIMIT bytes, as a broker does past max.message.bytes."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, letter: DeadLetter) -> Acknowledged:
        if len(letter.encode()) > LIMIT:
            raise MessageSizeTooLargeError()
        self.letters.append(letter)
        return ACKNOWLEDGED


class RefusingDelaySink:
    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Acknowledged:
        raise MessageSizeTooLargeError()


async def test_a_letter_too_large_is_written_without_its_events(wait_until: WaitUntil) -> None:
    sink = SizeLimitedSink()
    writer = DeadLetterWriter(sink, Handoff("test", initial_backoff=0.001))
    huge = {"event_id": "e1", "blob": "x" * 10_000}
    reason = Outcome(Kind.INVALID_EVENT, retryable=False, message="bad")
    done: list[bool] = []
    writer.submit(for_record(SOURCE, None, huge, reason), lambda: done.append(True))
    await wait_until(lambda: bool(done), what="letter handed off")
    [letter] = sink.letters
    assert "omitted" in letter.events[0]
    assert (letter.source.partition, letter.source.offset) == (0, 7)  # still findable
    await writer.close()


async def test_an_unparkable_delivery_is_dead_lettered_as_unwritable(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    _, catalog = build_catalog([channel_cfg("crm")])
    given_up: list[tuple[str, Outcome]] = []
    delays = DelayPath(
        RefusingDelaySink(),
        "retry",
        (5.0,),
        "g",
        Handoff("test", initial_backoff=0.001),
        on_unwritable=lambda d, reason: given_up.append((d.id, reason)),
    )
    delivery = Delivery(
        id=delivery_id("crm", ["e1"]),
        channel=catalog.channels["crm"],
        campaign_id="c",
        template_param={},
        user_attr=[],
        events=[{"event_id": "e1"}],
        sources=[SOURCE],
    )
    written: list[bool] = []
    delays.submit(delivery, 5.0, lambda: written.append(True))
    await wait_until(lambda: bool(given_up), what="fallback called")
    [(delivery_id_, reason)] = given_up
    assert delivery_id_ == delivery.id
    assert reason.kind is Kind.UNWRITABLE
    assert not written, "a delivery that was never parked must not count as parked"
    await delays.close()


class AckingSink:
    """Hands out acknowledgements the test resolves, like a producer with a slow broker."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[None]] = []

    async def send(self, letter: DeadLetter) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


def _letter(offset: int) -> DeadLetter:
    reason = Outcome(Kind.INVALID_EVENT, retryable=False, message="bad")
    return for_record(Source("events", 0, offset), b"x", None, reason)


async def test_a_burst_is_written_by_one_task_and_handed_off_when_acknowledged(
    wait_until: WaitUntil,
) -> None:
    sink = AckingSink()
    handoff = Handoff("dead letter", initial_backoff=0.001)
    writer = DeadLetterWriter(sink, handoff)
    done: list[int] = []
    tasks_before = len(asyncio.all_tasks())
    for offset in range(500):
        writer.submit(_letter(offset), lambda o=offset: done.append(o))
    assert len(asyncio.all_tasks()) == tasks_before + 1  # one writer, not one task each
    await wait_until(lambda: len(sink.acks) == 500, what="all handed to the producer")
    assert done == []  # nothing counts as written before its acknowledgement
    assert handoff.pending == 500
    for ack in sink.acks:
        ack.set_result(None)
    await wait_until(lambda: len(done) == 500, what="all acknowledged")
    assert handoff.pending == 0
    await writer.close()


async def test_a_failed_acknowledgement_is_tried_again_and_reported_once(
    wait_until: WaitUntil,
) -> None:
    sink = AckingSink()
    seen: list[HandoffChanged] = []
    observer = Observer([lambda d: seen.append(d) if isinstance(d, HandoffChanged) else None])
    handoff = Handoff("dead letter", observer, initial_backoff=0.001)
    writer = DeadLetterWriter(sink, handoff)
    done: list[int] = []
    for offset in range(3):
        writer.submit(_letter(offset), lambda o=offset: done.append(o))
    await wait_until(lambda: len(sink.acks) == 3, what="first tries")
    for ack in sink.acks:
        ack.set_exception(KafkaTimeoutError())
    await wait_until(lambda: len(sink.acks) == 6, what="second tries")
    for ack in sink.acks[3:]:
        ack.set_result(None)
    await wait_until(lambda: sorted(done) == [0, 1, 2], what="written on the second try")
    assert [(s.failing, s.failed_writes) for s in seen] == [(True, 1), (False, 3)]
    await writer.close()


async def test_a_bug_in_a_write_stops_loudly_instead_of_looping(wait_until: WaitUntil) -> None:
    class BrokenSink:
        async def send(self, letter: DeadLetter) -> Acknowledged:
            raise TypeError("a bug of ours")

    fatal: list[BaseException] = []
    writer = DeadLetterWriter(BrokenSink(), Handoff("dead letter", on_fatal=fatal.append))
    writer.submit(_letter(1), lambda: None)
    await wait_until(lambda: bool(fatal), what="reported as fatal")
    assert isinstance(fatal[0], TypeError)
    await writer.close()
