"""The main path on a real Apache Kafka and a real receiver that verifies every signature."""

from __future__ import annotations

import time
from collections import Counter

import orjson

from consumer.attributes import open_store
from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.timing import busiest_second, most_in_a_second, sent_at, steady_rate

from .support import (
    Setup,
    StartService,
    channel,
    committed_to_end,
    create_topic,
    encoded,
    event,
    pairs_delivered,
    produce,
    read_all,
)

CHANNELS = ["coupon-system", "push-service", "loyalty-points"]


async def test_every_event_reaches_every_channel_signed(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, n) for n in CHANNELS],
        {"double11-coupon": CHANNELS, "loyalty-boost": CHANNELS},
        tmp=tmp,
    )
    config = setup.config()
    store = open_store(config.attributes)
    await store.put_many([(f"u-{i}", {"hobby": f"game{i}", "secret_score": i}) for i in range(50)])
    await store.close()
    await create_topic(bootstrap, setup.topic, 3)
    events = [
        event(["double11-coupon", "loyalty-boost"][i % 2], f"u-{i % 60}") for i in range(2000)
    ]
    await produce(bootstrap, setup.topic, encoded(events))
    expected = {(ch, delivery_id(ch, [e["event_id"]])) for e in events for ch in CHANNELS}

    started = time.monotonic()
    service = running_service(config, setup.environ)
    assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected, within=120), (
        f"{len(expected - pairs_delivered(receiver))} pairs missing"
    )
    elapsed = time.monotonic() - started
    assert await committed_to_end(setup)
    await service.shutdown()

    assert all(r.verified for r in receiver.received)
    # Exactly once per (event, channel): a set would also pass with every pair sent twice.
    sent = Counter((r.channel, r.delivery_id) for r in receiver.received)
    assert set(sent) == expected
    assert set(sent.values()) == {1}, f"{sum(sent.values()) - len(sent)} sent more than once"
    campaign_of = {
        (ch, delivery_id(ch, [e["event_id"]])): e["campaign_id"] for e in events for ch in CHANNELS
    }
    for r in receiver.delivered():
        assert list(r.body) == ["name", "templateParam", "userAttr", "timestamp"]
        assert r.body["name"] == r.channel
        assert r.body["templateParam"] == {
            "title": f"hello {campaign_of[r.channel, r.delivery_id]}"
        }
    users_with_attrs = [r for r in receiver.delivered() if r.body["userAttr"]]
    assert users_with_attrs, "attributes were never attached"
    assert all(list(r.body["userAttr"][0]) == ["hobby"] for r in users_with_attrs)
    print(
        f"\n2,000 events x 3 channels: {len(expected) / elapsed:.0f} deliveries/s "
        f"({elapsed:.1f} s from start to last delivery)"
    )


async def test_retryable_status_then_success_keeps_the_delivery_id(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    setup = Setup(bootstrap, receiver, [channel(receiver, "flaky")], {"c": ["flaky"]}, tmp=tmp)
    receiver.answer("flaky", [503])
    e = event("c", "u-1")
    await create_topic(bootstrap, setup.topic, 3)
    await produce(bootstrap, setup.topic, encoded([e]))
    service = running_service(setup.config(), setup.environ)
    assert await receiver.wait_for(lambda r: len(r.delivered()) == 1, within=30)
    await service.shutdown()
    first, second = receiver.received
    assert (first.status, first.attempt) == (503, 1)
    assert (second.status, second.attempt) == (200, 2)
    assert first.delivery_id == second.delivery_id == delivery_id("flaky", [e["event_id"]])


async def test_permanent_failure_is_dead_lettered_after_one_attempt(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    setup = Setup(bootstrap, receiver, [channel(receiver, "strict")], {"c": ["strict"]}, tmp=tmp)
    receiver.answer("strict", default=400)
    e = event("c", "u-1")
    await create_topic(bootstrap, setup.topic, 3)
    await produce(bootstrap, setup.topic, encoded([e]))
    service = running_service(setup.config(), setup.environ)
    assert await committed_to_end(setup)
    await service.shutdown()
    assert len(receiver.received) == 1
    [letter] = await read_all(bootstrap, setup.dead_letter_topic)
    body = orjson.loads(letter.value)
    assert body["reason"]["kind"] == "http_status"
    assert body["reason"]["status"] == 400
    assert body["attempts"] == 1
    assert body["delivery_id"] == delivery_id("strict", [e["event_id"]])
    assert body["events"] == [e]
    assert dict(letter.headers) == {"reason": b"http_status", "channel": b"strict"}


async def test_bad_records_are_dead_lettered_and_never_block(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    setup = Setup(bootstrap, receiver, [channel(receiver, "ok")], {"c": ["ok"]}, tmp=tmp)
    await create_topic(bootstrap, setup.topic, 1)  # one partition: the bad ones sit in between
    good = [event("c", f"u-{i}") for i in range(4)]
    records = [
        *encoded(good[:2]),
        (b"u-x", b"{not json"),
        (b"u-y", orjson.dumps(event("no-such-campaign", "u-y"))),
        *encoded(good[2:]),
    ]
    await produce(bootstrap, setup.topic, records)
    service = running_service(setup.config(), setup.environ)
    assert await receiver.wait_for(lambda r: len(r.delivered()) == 4, within=30)
    assert await committed_to_end(setup)
    await service.shutdown()
    assert sorted(r.delivery_id for r in receiver.received) == sorted(
        delivery_id("ok", [e["event_id"]]) for e in good
    ), "each good event exactly once"
    letters = [orjson.loads(r.value) for r in await read_all(bootstrap, setup.dead_letter_topic)]
    assert sorted(letter["reason"]["kind"] for letter in letters) == [
        "invalid_event",
        "unknown_campaign",
    ]
    by_kind = {letter["reason"]["kind"]: letter for letter in letters}
    assert by_kind["invalid_event"]["events"] == ["{not json"]
    assert by_kind["invalid_event"]["source"]["offset"] == 2
    assert by_kind["unknown_campaign"]["campaign_id"] == "no-such-campaign"


async def test_rate_limit_holds_at_the_receiver(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    limited = channel(
        receiver, "limited", rate_limit={"per_second": 20, "burst": 20}, max_concurrency=8
    )
    setup = Setup(bootstrap, receiver, [limited], {"c": ["limited"]}, tmp=tmp)
    total = 200
    await create_topic(bootstrap, setup.topic, 3)
    await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(total)))
    service = running_service(setup.config(), setup.environ)
    assert await receiver.wait_for(lambda r: len(r.delivered()) == total, within=60)
    await service.shutdown()
    assert len(receiver.received) == total  # each once: no retry, nothing twice
    # On the sender's own stamps: arrival times in this loop, which also runs the service,
    # bunch behind any stall of it. The limiter spaces send slots 1/20 s apart after a burst
    # of 20; a stamp may lag its slot (see most_in_a_second).
    stamps = sent_at(r.body for r in receiver.received)
    busiest = busiest_second(stamps)
    assert busiest <= most_in_a_second(20, burst=20), f"{busiest} sent in one second"
    # The mean after the burst, over the 9 s its 180 slots span: lateness moves only its ends.
    steady = steady_rate(stamps, burst=20)
    print(f"\nrate limit 20/s, burst 20: busiest second {busiest}, then {steady:.2f}/s")
    assert abs(steady - 20) <= 2, f"mean rate {steady:.1f}/s"


async def test_batched_channel_packs_users_of_one_campaign(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    batched = channel(receiver, "batched", batch={"max_users": 5, "linger_ms": 300})
    setup = Setup(bootstrap, receiver, [batched], {"c": ["batched"]}, tmp=tmp)
    config = setup.config()
    store = open_store(config.attributes)
    await store.put_many([(f"u-{i}", {"hobby": f"h{i}"}) for i in range(10)])
    await store.close()
    await create_topic(bootstrap, setup.topic, 1)
    await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(10)))
    service = running_service(config, setup.environ)
    assert await receiver.wait_for(
        lambda r: sum(len(x.body["userAttr"]) for x in r.delivered()) >= 10, within=30
    )
    await service.shutdown()
    sizes = [len(r.body["userAttr"]) for r in receiver.delivered()]
    assert max(sizes) <= 5, f"batches of {sizes} users: max_users is 5"
    # All ten were waiting when the service started: a batch fills to its limit.
    assert 5 in sizes, f"batches of {sizes} users: never packed to max_users"
    users = sorted(u["hobby"] for r in receiver.delivered() for u in r.body["userAttr"])
    assert users == sorted(f"h{i}" for i in range(10))  # each user once
