"""Generated records through the real service on a real broker: whatever arrives, the service
keeps running, every record is delivered or dead-lettered with a reason, and the partition's
committed offset reaches its end.

One service run per example over many records; few examples, so the test stays under a minute.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from consumer.delivery import delivery_id
from consumer.events import Event, parse_event
from consumer.receiver import Receiver

from .support import (
    RunningService,
    Setup,
    channel,
    committed_to_end,
    create_topic,
    produce,
    read_all,
)

Record = tuple[bytes | None, bytes | None]
CAMPAIGN = "fuzz"
NEAR_ONE_MB = 1_000_000  # the input topic keeps the broker's default limit of ~1 MiB
INPUT_MAX_VALUE = 1_048_400  # about the largest value a default topic takes with a short key

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
texts = st.text(min_size=1, max_size=256)


def with_nested(document: dict[str, Any], depth: int) -> bytes:
    """`document` plus a field nested `depth` lists deep (spliced in: orjson writes only 255)."""
    return _encode(document)[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def good_events(draw: st.DrawFn) -> dict[str, Any]:
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=3))
    document = {
        **{f"x_{k}": v for k, v in extra.items()},  # unknown fields are kept and ignored
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "event_type": "user.threshold.reached",
        "schema_version": 1,
        "user_id": draw(texts),
        "campaign_id": draw(st.sampled_from([CAMPAIGN] * 5 + ["unknown", "", "x" * 300])),
        "behavior": {"name": draw(st.text(max_size=20)), "count": draw(st.integers(0, 10))},
        "occurred_at": "2026-11-11T00:00:05.123Z",
    }
    return document


@st.composite
def broken_events(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(good_events())
    field = draw(st.sampled_from(["event_id", "user_id", "campaign_id", "occurred_at", "behavior"]))
    if draw(st.booleans()):
        document.pop(field)
    else:
        document[field] = draw(json_values)
    return document


def _encode(document: Any) -> bytes:
    return orjson.dumps(document)


hostile = st.one_of(
    broken_events().map(_encode),
    json_values.map(_encode),
    st.binary(max_size=200),  # mostly not UTF-8, never JSON
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1, 10_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 2000).map(lambda n: b"[" * n),  # unclosed
    # Deep but legal for the JSON parser (whose limit is 1024), inside an otherwise good event.
    st.tuples(good_events(), st.integers(100, 1000)).map(lambda pair: with_nested(*pair)),
    st.tuples(good_events(), st.integers(10_000, 300_000)).map(
        lambda pair: _encode({**pair[0], "huge": "é" * pair[1]})
    ),
    st.just(None),  # a tombstone
)
# About a third good events, so deliveries and the delay path see plenty of traffic too.
values = st.one_of(good_events().map(_encode), hostile, hostile)
# aiokafka refuses a record with neither key nor value; other clients do not, but a null value
# with an empty key is what reaches the consumer all the same.
records = st.lists(
    st.tuples(st.none() | st.binary(max_size=40), values).map(
        lambda kv: (kv[0] or b"", None) if kv[1] is None else kv
    ),
    min_size=20,
    max_size=60,
)
_EDGE = {
    "event_id": "edge-of-the-limit",
    "user_id": "u-edge",
    "campaign_id": CAMPAIGN,
    "occurred_at": "2026-11-11T00:00:05.123Z",
}
# Always there, whatever hypothesis draws: the cases the issue names.
FIXED: list[Record] = [
    (None, b"[" * 10_000),
    (b"k", b"\xff\xfe\xfa" * 1000),
    (b"", None),
    (b"big", b"x" * NEAR_ONE_MB),  # not JSON, near the input limit: must still dead-letter
    (b"big-json", _encode({"event_id": "e", "pad": "p" * (NEAR_ONE_MB - 100)})),
    # A good event as large as the input topic takes: its delay-path record is larger still.
    (b"edge", _encode({**_EDGE, "pad": "p" * (INPUT_MAX_VALUE - len(_encode(_EDGE)) - 9)})),
]


def expected_delivery(value: bytes | None, name: str) -> str | None:
    parsed = parse_event(value)
    if isinstance(parsed, Event) and parsed.campaign_id == CAMPAIGN:
        return delivery_id(name, [parsed.event_id])
    return None


def _count(letters: list[dict[str, Any]], channel_name: str) -> int:
    return sum(letter["channel"] == channel_name for letter in letters)


async def _dead_letters(
    setup: Setup, until: Callable[[list[dict[str, Any]]], bool], within: float = 45
) -> list[dict[str, Any]]:
    """Every dead letter so far, re-read until `until` holds or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        records = await read_all(setup.bootstrap, setup.dead_letter_topic)
        letters = [orjson.loads(r.value) for r in records]
        if until(letters) or loop.time() > deadline:
            return letters
        await asyncio.sleep(0.3)  # polling the broker for a condition, with a deadline


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "6")),
    deadline=None,
    phases=[Phase.generate],  # shrinking would rerun the service for minutes
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the receiver serves every example
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(drawn=records, order=st.randoms(use_true_random=False))
async def test_generated_records_never_stop_the_partition(
    bootstrap: str, receiver: Receiver, tmp: str, drawn: list[Record], order: Any
) -> None:
    # One channel answers, one is down: hostile events also travel the delay path and end
    # in delivery dead letters, not only in record dead letters.
    name, down = f"fuzz-{uuid.uuid4().hex[:8]}", f"down-{uuid.uuid4().hex[:8]}"
    receiver.answer(down, default=503)
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, name), channel(receiver, down)],
        {CAMPAIGN: [name, down]},
        # The circuit stays closed, so every down delivery uses up its schedule at once: an open
        # circuit would hold them, waiting for a probe, until their maximum age.
        retry={
            "quick_attempts": 1,
            "schedule_seconds": [0.2],
            "circuit_breaker": {"failures": 1_000_000},
        },
        tmp=tmp,
    )
    batch = [*drawn, *FIXED]
    order.shuffle(batch)
    await create_topic(bootstrap, setup.topic, 1)  # one partition: a stuck record stops it all
    await produce(bootstrap, setup.topic, batch)
    expected = [expected_delivery(value, name) for _, value in batch]
    expected_down = sorted(d for _, v in batch if (d := expected_delivery(v, down)))

    service = RunningService(setup.config(), setup.environ)
    moved = await committed_to_end(setup, within=45)
    # The down channel's deliveries left the input once on the delay path; their dead
    # letters come after the schedule ran out.
    letters = await _dead_letters(
        setup, until=lambda ls: _count(ls, down) == len(expected_down), within=45 if moved else 0
    )
    assert not service.task.done(), "the service stopped by itself"
    await service.shutdown()
    assert moved, "the committed offset never reached the end of the partition"

    arrived = [r for r in receiver.received if r.channel == name]
    assert all(r.verified and r.status == 200 for r in arrived)
    assert sorted(r.delivery_id for r in arrived) == sorted(d for d in expected if d)
    rejected = [letter for letter in letters if letter["channel"] is None]
    failed = [letter for letter in letters if letter["channel"] == down]
    assert len(rejected) + len(failed) == len(letters)
    assert sorted(letter["source"]["offset"] for letter in rejected) == [
        offset for offset, d in enumerate(expected) if d is None
    ]
    assert len(arrived) + len(rejected) == len(batch)  # each record: delivered or rejected
    assert sorted(letter["delivery_id"] for letter in failed) == expected_down
    for letter in rejected:
        assert letter["reason"]["kind"] in ("invalid_event", "unknown_campaign")
        assert letter["reason"]["message"]
    assert {letter["reason"]["kind"] for letter in failed} <= {"http_status", "unwritable"}
    assert all(letter["limit"] == "schedule" for letter in failed if letter["reason"]["status"])
    print(
        f"\n{len(batch)} records: {len(arrived)} delivered, {len(rejected)} rejected; "
        f"{len(failed)} deliveries to the down channel dead-lettered after the delay path"
    )
