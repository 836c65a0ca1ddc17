"""Hand-offs that can never be written (too large) end in a smaller dead letter, not a stall."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka.errors import MessageSizeTooLargeError

from consumer.deadletter import DeadLetter, DeadLetterWriter, for_record
from consumer.delaypath import DelayPath
from consumer.delivery import Delivery, Source, delivery_id
from consumer.handoff import Handoff
from consumer.outcome import Kind, Outcome

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

SOURCE = Source("events", 0, 7)
LIMIT = 2_000  # bytes a fake broker accepts per record


class SizeLimitedSink:
    """Refuses records over LIMIT bytes, as a broker does past max.message.bytes."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def write(self, letter: DeadLetter) -> None:
        if len(letter.encode()) > LIMIT:
            raise MessageSizeTooLargeError()
        self.letters.append(letter)


class RefusingDelaySink:
    async def write(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
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
