"""A lane says how loaded it is at each tick while busy, and once with zeros when it goes idle."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from consumer.catalog import Channel
from consumer.config import RetryConfig
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayPath, MemoryDelaySink
from consumer.delivery import Delivery, Source, Ticket
from consumer.lanes import ChannelLane
from consumer.observer import Details, LaneLoad, Observer
from consumer.outcome import Outcome, from_response

from .fakes import FakeOwner

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil


class GatedTransport:
    """Answers 200 once the gate opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def send(self, delivery: Delivery) -> Outcome:
        await self.gate.wait()
        return from_response(200, None, "")


async def test_busy_ticks_then_one_idle_zero(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory, wait_until: WaitUntil
) -> None:
    _, catalog = build_catalog([channel_cfg("crm", max_concurrency=1)])
    channel: Channel = catalog.channels["crm"]
    seen: list[Details] = []
    retry = RetryConfig(schedule_seconds=[60.0])
    dead_letters = DeadLetterWriter(MemoryDeadLetterSink())
    delays = DelayPath(MemoryDelaySink(), "webhook-retry", (60.0,))
    transport = GatedTransport()
    lane = ChannelLane(
        channel,
        transport,
        dead_letters,
        delays,
        retry,
        observer=Observer([seen.append]),
        rng=random.Random(1),
    )

    def loads() -> list[LaneLoad]:
        return [d for d in seen if isinstance(d, LaneLoad)]

    lane.start()
    try:
        await wait_until(lambda: loads() == [LaneLoad("crm", 0, 0)], what="idle at start")
        owner = FakeOwner()
        for offset in range(3):
            source = Source("t", 0, offset)
            lane.submit(
                Delivery(
                    f"d{offset}", channel, "c", {}, [], [], [source], [Ticket(source, 1, owner)]
                )
            )
        await wait_until(lambda: LaneLoad("crm", 2, 1) in loads(), what="a busy tick")
        transport.gate.set()
        await wait_until(lambda: len(owner) == 3, what="all delivered")
        await wait_until(lambda: loads()[-1] == LaneLoad("crm", 0, 0), what="idle again")
        idle_at = len(loads())
        await asyncio.sleep(0.6)  # two ticks' worth: an idle lane says nothing more
        assert len(loads()) == idle_at
    finally:
        await lane.close()
        await delays.close()
        await dead_letters.close()
