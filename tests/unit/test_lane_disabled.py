"""A disabled channel's lane: a 410 stops it after the requests already out, deliveries become
`channel_disabled` dead letters without a request, and enabling it sends again."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from consumer.breaker import CircuitBreaker, State
from consumer.catalog import Channel
from consumer.channels import RECEIVER, ChannelRecord, ChannelState, RecordKind
from consumer.config import CircuitBreakerConfig, RetryConfig
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayPath, MemoryDelaySink, delay_levels
from consumer.delivery import Delivery, Source, Ticket, delivery_id
from consumer.lanes import ChannelLane
from consumer.outcome import Outcome, from_response

from .fakes import FakeOwner

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, WaitUntil

RETRY = RetryConfig(
    quick_attempts=3,
    backoff_initial_ms=1,
    backoff_max_ms=2,
    schedule_seconds=[60.0],
    circuit_breaker=CircuitBreakerConfig(failures=1, cooldown_seconds=30),
)


class GatedTransport:
    """Holds every request until `gate` is set, then answers `status`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.calls = 0
        self.gate = asyncio.Event()

    async def send(self, delivery: Delivery) -> Outcome:
        self.calls += 1
        await self.gate.wait()
        return from_response(self.status, None, "gone for good")


@dataclass
class Harness:
    lane: ChannelLane
    state: ChannelState
    published: list[ChannelRecord]
    letters: MemoryDeadLetterSink
    owner: FakeOwner

    def submit(self, count: int, first: int = 0) -> None:
        for offset in range(first, first + count):
            source = Source("events", 0, offset)
            self.lane.submit(
                Delivery(
                    id=delivery_id(self.lane.channel.name, [f"e{offset}"]),
                    channel=self.lane.channel,
                    campaign_id="c",
                    template_param={},
                    user_attr=[],
                    events=[{"event_id": f"e{offset}"}],
                    sources=[source],
                    tickets=[Ticket(source, 1, self.owner)],
                )
            )


@asynccontextmanager
async def lane_of(
    channel: Channel, transport: object, breaker: CircuitBreaker | None = None
) -> AsyncIterator[Harness]:
    letters = MemoryDeadLetterSink()
    dead_letters = DeadLetterWriter(letters)
    delays = DelayPath(MemoryDelaySink(), "retry", delay_levels(RETRY))
    published: list[ChannelRecord] = []
    state = ChannelState(publish=published.append)
    lane = ChannelLane(
        channel,
        transport,  # type: ignore[arg-type]
        dead_letters,
        delays,
        RETRY,
        breaker=breaker,
        control=state,
        rng=random.Random(3),
    )
    lane.start()
    try:
        yield Harness(lane, state, published, letters, FakeOwner())
    finally:
        await lane.close()
        await delays.close()
        await dead_letters.close()


def disable(state: ChannelState, channel: str, disabled: bool = True) -> None:
    state.write(
        ChannelRecord(
            kind=RecordKind.STATE, channel=channel, by="ops@host", disabled=disabled, reason="x"
        )
    )


@pytest.fixture
def make_channel(channel_cfg: ChannelFactory, build_catalog: CatalogFactory):  # type: ignore[no-untyped-def]
    def make(**fields: object) -> Channel:
        _, catalog = build_catalog([channel_cfg("gone", **fields)])
        return catalog.channels["gone"]

    return make


async def test_a_410_stops_the_lane_after_the_requests_in_flight(
    make_channel, wait_until: WaitUntil
) -> None:  # type: ignore[no-untyped-def]
    transport = GatedTransport(410)
    async with lane_of(make_channel(max_concurrency=4), transport) as h:
        h.submit(20)
        await wait_until(lambda: transport.calls == 4, what="4 requests out")
        transport.gate.set()
        await wait_until(lambda: len(h.owner) == 20, what="every delivery handed off")
        # Exactly the 4 that were out when the first 410 came back; 16 never went.
        assert transport.calls == 4
        letters = h.letters.letters
        assert {letter.reason.kind for letter in letters} == {"channel_disabled"}
        answered = [letter for letter in letters if letter.reason.status == 410]
        assert len(answered) == 4
        assert all(letter.attempts == 1 for letter in answered)
        held = [letter for letter in letters if letter.reason.status is None]
        assert len(held) == 16
        assert all(letter.attempts == 0 for letter in held)
        assert "disabled by receiver" in held[0].reason.message
        # Said once for the deployment, although four requests answered 410.
        assert [(r.kind, r.by, r.disabled, r.status) for r in h.published] == [
            (RecordKind.STATE, RECEIVER, True, 410)
        ]
        disabled = h.state.disabled("gone")
        assert disabled is not None
        assert "410 Gone: gone for good" in disabled.reason


async def test_a_disabled_channel_sends_nothing_and_enabled_sends_again(
    make_channel, wait_until: WaitUntil
) -> None:  # type: ignore[no-untyped-def]
    transport = GatedTransport(200)
    transport.gate.set()
    async with lane_of(make_channel(), transport) as h:
        disable(h.state, "gone")
        h.submit(5)
        await wait_until(lambda: len(h.owner) == 5)
        assert transport.calls == 0
        assert len(h.letters.letters) == 5
        disable(h.state, "gone", disabled=False)
        h.submit(3, first=5)
        await wait_until(lambda: len(h.owner) == 8)
        assert transport.calls == 3
        assert len(h.letters.letters) == 5


async def test_deliveries_waiting_for_the_rate_limit_are_not_sent_once_disabled(
    make_channel, wait_until: WaitUntil
) -> None:  # type: ignore[no-untyped-def]
    transport = GatedTransport(200)
    transport.gate.set()
    # One request every 2 s: the second and third wait in the limiter, past the first check.
    channel = make_channel(max_concurrency=3, rate_limit={"per_second": 0.5, "burst": 1})
    async with lane_of(channel, transport) as h:
        h.submit(3)
        await wait_until(lambda: transport.calls == 1 and len(h.owner) == 1)
        disable(h.state, "gone")
        await wait_until(lambda: len(h.owner) == 3, within=10)
        assert transport.calls == 1
        assert [letter.reason.kind for letter in h.letters.letters] == ["channel_disabled"] * 2


async def test_a_held_back_delay_record_is_not_kept_waiting_for_the_circuit(
    make_channel,
) -> None:  # type: ignore[no-untyped-def]
    async with lane_of(make_channel(), GatedTransport(200)) as h:
        h.lane.breaker.record(failure=True)  # one failure opens it (failures: 1)
        assert h.lane.hold_for() is not None
        disable(h.state, "gone")
        assert h.lane.hold_for() is None  # so the redelivery hands it on, to be dead-lettered


async def test_a_probe_refused_while_it_waited_leaves_the_circuit_usable(
    make_channel, wait_until: WaitUntil
) -> None:  # type: ignore[no-untyped-def]
    transport = GatedTransport(200)
    transport.gate.set()
    now = [1000.0]
    breaker = CircuitBreaker(1, 30.0, probe_timeout=0.5, clock=lambda: now[0])
    channel = make_channel(rate_limit={"per_second": 0.5, "burst": 1})
    async with lane_of(channel, transport, breaker) as h:
        h.submit(1)  # takes the limiter's burst
        await wait_until(lambda: len(h.owner) == 1)
        breaker.record(failure=True)  # open
        now[0] += 30.0  # the cool-down is over: the next delivery is the probe
        h.submit(1, first=1)
        await wait_until(lambda: breaker.state is State.HALF_OPEN, what="the probe admitted")
        disable(h.state, "gone")  # while the probe waits ~2 s for the rate limit
        await wait_until(lambda: len(h.owner) == 2, within=5)
        assert transport.calls == 1
        assert breaker.state is State.CLOSED  # released, not left half-open for good
        disable(h.state, "gone", disabled=False)
        h.submit(1, first=2)
        await wait_until(lambda: len(h.owner) == 3, within=5)
        assert transport.calls == 2  # sent, not held for a probe that never comes back
