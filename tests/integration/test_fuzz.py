"""Generated records through the real service on a real broker: whatever arrives, the service
keeps running, every record is delivered or dead-lettered with a reason, and the partition's
committed offset reaches its end.

One service run per example over many records; few examples, so the test stays under a minute.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.polling import until as poll

from .support import (
    Setup,
    StartService,
    channel,
    committed_to_end,
    create_topic,
    produce,
    read_all,
)

Record = tuple[bytes | None, bytes | None]
# A value and the event id it must be delivered under, or None: it must be dead-lettered. Each
# strategy knows what it built, so the expected outcome never comes from the service's parser.
Labeled = tuple[bytes | None, str | None]
CAMPAIGN = "fuzz"
NEAR_ONE_MB = 1_000_000  # the input topic keeps the broker's default limit of ~1 MiB
INPUT_MAX_VALUE = 1_048_400  # about the largest value a default topic takes with a short key
MAX_DEPTH = 64  # threshold-event.v1 (docs/events.md): deeper documents are rejected
MAX_ID = 256  # the longest event_id, user_id and campaign_id the schema takes
# One service run per example, so few; CI (HYPOTHESIS_PROFILE=ci) draws more; FUZZ_EXAMPLES
# overrides both.
EXAMPLES = int(
    os.environ.get("FUZZ_EXAMPLES") or (10 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 6)
)

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
texts = st.text(min_size=1, max_size=MAX_ID)
not_json_strings = json_values.filter(lambda v: not isinstance(v, str))
# What no id field takes: another JSON type, empty, or too long.
bad_ids = not_json_strings | st.sampled_from(["", "x" * (MAX_ID + 1)])
# What occurred_at never takes (a number is a Unix time to the schema, so none of those).
bad_times = (
    st.none()
    | st.lists(json_values, max_size=3)
    | st.dictionaries(st.text(max_size=8), json_values, max_size=3)
    | st.sampled_from(["", "yesterday", "2026-13-45T00:00:00Z"])
)
# behavior is an object with a string `name`, or null.
bad_behaviors = (
    st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=10)
    | st.lists(json_values, max_size=3)
    | st.fixed_dictionaries({"count": st.integers(0, 10)})  # no name
    | st.fixed_dictionaries({"name": not_json_strings.filter(lambda v: v is not None)})
)
BREAKS = {
    "event_id": bad_ids,
    "user_id": bad_ids,
    "campaign_id": bad_ids,
    "occurred_at": bad_times,
    "behavior": bad_behaviors,
}


def with_nested(document: dict[str, Any], depth: int) -> bytes:
    """`document` plus a field nested `depth` lists deep (spliced in: orjson writes only 255)."""
    return _encode(document)[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """Events threshold-event.v1 takes; delivered when their campaign is CAMPAIGN, else
    dead-lettered as an unknown campaign."""
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=3))
    return {
        **{f"x_{k}": v for k, v in extra.items()},  # unknown fields are kept and ignored
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "event_type": "user.threshold.reached",
        "schema_version": 1,
        "user_id": draw(texts),
        "campaign_id": draw(st.sampled_from([CAMPAIGN] * 5 + ["unknown"])),
        "behavior": {"name": draw(st.text(max_size=20)), "count": draw(st.integers(0, 10))},
        "occurred_at": "2026-11-11T00:00:05.123Z",
    }


def delivers(document: dict[str, Any]) -> str | None:
    """The event id a valid event is delivered under: only its campaign can stop it."""
    return document["event_id"] if document["campaign_id"] == CAMPAIGN else None


@st.composite
def broken_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one field the schema refuses (or a required one removed)."""
    document = draw(valid_events())
    field = draw(st.sampled_from(sorted(BREAKS)))
    if field != "behavior" and draw(st.booleans()):  # behavior may be left out
        document.pop(field)
    else:
        document[field] = draw(BREAKS[field])
    return document


def _encode(document: Any) -> bytes:
    return orjson.dumps(document)


def dead_lettered(values: st.SearchStrategy[bytes | None]) -> st.SearchStrategy[Labeled]:
    return values.map(lambda value: (value, None))


hostile: st.SearchStrategy[Labeled] = st.one_of(
    dead_lettered(broken_events().map(_encode)),
    # Never an event: a dictionary here has keys of up to 8 characters, "campaign_id" has 11.
    dead_lettered(json_values.map(_encode)),
    dead_lettered(st.binary(max_size=200)),  # mostly not UTF-8, never JSON
    dead_lettered(st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))),
    dead_lettered(st.integers(1, 10_000).map(lambda n: b"[" * n + b"]" * n)),
    dead_lettered(st.integers(1, 2000).map(lambda n: b"[" * n)),  # unclosed
    # Deep but legal for the JSON parser (whose limit is 1024), inside an otherwise good event.
    dead_lettered(
        st.tuples(valid_events(), st.integers(MAX_DEPTH + 1, 1000)).map(
            lambda pair: with_nested(*pair)
        )
    ),
    st.tuples(valid_events(), st.integers(10_000, 300_000)).map(
        lambda pair: (_encode({**pair[0], "huge": "é" * pair[1]}), delivers(pair[0]))
    ),
    st.just((None, None)),  # a tombstone
)
# About a third valid events, so deliveries and the delay path see plenty of traffic too.
values: st.SearchStrategy[Labeled] = st.one_of(
    valid_events().map(lambda e: (_encode(e), delivers(e))), hostile, hostile
)
# aiokafka refuses a record with neither key nor value; other clients do not, but a null value
# with an empty key is what reaches the consumer all the same.
records = st.lists(
    st.tuples(st.none() | st.binary(max_size=40), values).map(
        lambda kv: (kv[0] or b"", kv[1]) if kv[1][0] is None else kv
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
FIXED: list[tuple[bytes | None, Labeled]] = [
    (None, (b"[" * 10_000, None)),
    (b"k", (b"\xff\xfe\xfa" * 1000, None)),
    (b"", (None, None)),
    (b"big", (b"x" * NEAR_ONE_MB, None)),  # not JSON, near the input limit: must still dead-letter
    # JSON, near the limit, but no event: no user_id, campaign_id or occurred_at.
    (b"big-json", (_encode({"event_id": "e", "pad": "p" * (NEAR_ONE_MB - 100)}), None)),
    # A good event as large as the input topic takes: its delay-path record is larger still.
    (
        b"edge",
        (
            _encode({**_EDGE, "pad": "p" * (INPUT_MAX_VALUE - len(_encode(_EDGE)) - 9)}),
            _EDGE["event_id"],
        ),
    ),
]


def _count(letters: list[dict[str, Any]], channel_name: str) -> int:
    return sum(letter["channel"] == channel_name for letter in letters)


async def _dead_letters(
    setup: Setup, until: Callable[[list[dict[str, Any]]], bool], within: float = 45
) -> list[dict[str, Any]]:
    """Every dead letter so far, re-read until `until` holds or the deadline passes."""
    letters: list[dict[str, Any]] = []

    async def enough() -> bool:
        records = await read_all(setup.bootstrap, setup.dead_letter_topic)
        letters[:] = [orjson.loads(r.value) for r in records]
        return until(letters)

    await poll(enough, within, every=0.3)
    return letters


@settings(
    max_examples=EXAMPLES,
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
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    drawn: list[tuple[bytes | None, Labeled]],
    order: Any,
    running_service: StartService,
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
    labeled = [*drawn, *FIXED]
    order.shuffle(labeled)
    batch: list[Record] = [(key, value) for key, (value, _) in labeled]
    await create_topic(bootstrap, setup.topic, 1)  # one partition: a stuck record stops it all
    await produce(bootstrap, setup.topic, batch)
    owed = [event_id for _, (_, event_id) in labeled]  # by offset: delivered under, or None
    expected = [delivery_id(name, [e]) if e else None for e in owed]
    expected_down = sorted(delivery_id(down, [e]) for e in owed if e)

    service = running_service(setup.config(), setup.environ)
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
