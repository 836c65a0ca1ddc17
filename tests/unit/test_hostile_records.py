"""Records found by the fuzzer that once stopped a partition, kept as fast regressions."""

from __future__ import annotations

import orjson
import pytest

from consumer.deadletter import for_record
from consumer.delivery import Source
from consumer.events import Event, parse_event
from consumer.outcome import Kind, Outcome

EVENT = {
    "event_id": "e-deep",
    "user_id": "u-1",
    "campaign_id": "no-such-campaign",
    "occurred_at": "2026-11-11T00:00:05.123Z",
}


@pytest.mark.parametrize("depth", [100, 300, 1000])
def test_a_deeply_nested_record_can_always_be_dead_lettered(depth: int) -> None:
    value = orjson.dumps(EVENT)[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"
    parsed = parse_event(value)
    reason = Outcome(Kind.INVALID_EVENT, retryable=False, message="x")
    letter = for_record(Source("t", 0, 0), value, parsed.document, reason)
    encoded = letter.encode()  # the hand-off writes exactly this
    if isinstance(parsed, Event):
        assert orjson.loads(encoded)["events"] == [parsed.document]
    else:
        assert orjson.loads(encoded)["events"] == [value.decode()]
