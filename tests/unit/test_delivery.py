"""Delivery ids receivers deduplicate on, and tickets that finish a record once."""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING

import orjson
from hypothesis import given
from hypothesis import strategies as st

from consumer.delivery import DELIVERY_NAMESPACE, Delivery, Source, Ticket, delivery_id

from .fakes import FakeOwner

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory

SOURCE = Source("user-threshold-events", 2, 41)


def test_delivery_id_is_pinned_forever() -> None:
    # Receivers deduplicate on this value across releases: it must never change.
    # The documented formula: UUIDv5(namespace, JSON array of channel then sorted event ids).
    namespace = uuid.UUID("6c1f3f2e-3f0e-5d8a-9a57-1d0f5b2c7e41")
    expected = uuid.uuid5(namespace, '["coupon-system","7f1c","a9"]')
    assert delivery_id("coupon-system", ["a9", "7f1c"]) == str(expected)


def test_delivery_id_is_a_uuid5() -> None:
    assert uuid.UUID(delivery_id("coupon-system", ["e1"])).version == 5


def test_same_event_same_channel_same_id() -> None:
    assert delivery_id("coupon-system", ["e1"]) == delivery_id("coupon-system", ["e1"])


def test_differs_per_channel_and_per_event() -> None:
    ids = {
        delivery_id("coupon-system", ["e1"]),
        delivery_id("crm", ["e1"]),
        delivery_id("coupon-system", ["e2"]),
        delivery_id("coupon-system", ["e1", "e2"]),
    }
    assert len(ids) == 4


@given(st.lists(st.text(min_size=1), min_size=1, max_size=8, unique=True), st.randoms())
def test_batch_id_ignores_event_order(event_ids: list[str], rnd: random.Random) -> None:
    shuffled = list(event_ids)
    rnd.shuffle(shuffled)
    assert delivery_id("digest", shuffled) == delivery_id("digest", event_ids)


def test_distinct_batches_never_share_an_id() -> None:
    assert delivery_id("digest", ["a\nb"]) != delivery_id("digest", ["a", "b"])


def test_ticket_finishes_after_its_last_delivery() -> None:
    finished = FakeOwner()
    ticket = Ticket(SOURCE, 2, finished)
    ticket.done()
    assert finished == []
    ticket.done()
    assert finished == [SOURCE.offset]


def test_ticket_with_nothing_to_wait_for_finishes_at_once() -> None:
    finished = FakeOwner()
    Ticket(SOURCE, 0, finished)
    assert finished == [SOURCE.offset]


def test_delivery_finishes_its_records_once(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    _, catalog = build_catalog([channel_cfg("crm")])
    finished = FakeOwner()
    other = Source("user-threshold-events", 0, 7)
    delivery = Delivery(
        id=delivery_id("crm", ["e1", "e2"]),
        channel=catalog.channels["crm"],
        campaign_id="c",
        template_param={},
        user_attr=[],
        events=[{}, {}],
        sources=[SOURCE, other],
        tickets=[Ticket(SOURCE, 1, finished), Ticket(other, 1, finished)],
    )
    assert not delivery.orphaned()
    delivery.finish()
    delivery.finish()  # a second hand-off must not count twice
    assert finished == [SOURCE.offset, other.offset]


def test_a_delivery_is_orphaned_only_when_every_partition_it_carries_is_revoked(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    _, catalog = build_catalog([channel_cfg("crm")])
    mine, theirs = FakeOwner(), FakeOwner()
    other = Source("user-threshold-events", 1, 7)
    batch = Delivery(
        id=delivery_id("crm", ["e1", "e2"]),
        channel=catalog.channels["crm"],
        campaign_id="c",
        template_param={},
        user_attr=[],
        events=[{}, {}],
        sources=[SOURCE, other],
        tickets=[Ticket(SOURCE, 1, mine), Ticket(other, 1, theirs)],
    )
    theirs.revoked = True
    assert not batch.orphaned()  # half of it is still ours: it must be sent
    mine.revoked = True
    assert batch.orphaned()


@given(
    channel=st.text(max_size=30),
    event_ids=st.lists(st.text(max_size=40), min_size=1, max_size=5),
)
def test_delivery_ids_are_the_rfc_4122_uuid5_of_channel_and_sorted_events(
    channel: str, event_ids: list[str]
) -> None:
    name = orjson.dumps([channel, *sorted(event_ids)]).decode()
    assert delivery_id(channel, event_ids) == str(uuid.uuid5(DELIVERY_NAMESPACE, name))
