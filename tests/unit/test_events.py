"""Raw Kafka values into threshold events, or a rejection that says why."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.events import Event, Rejected, occurred_at_of, parse_event

CONTRACT_EXAMPLE: dict[str, Any] = {
    "event_id": "7f1c2a",
    "event_type": "user.threshold.reached",
    "schema_version": 1,
    "user_id": "u-10086",
    "campaign_id": "double11-coupon",
    "behavior": {"name": "add_to_cart", "count": 5, "threshold": 5, "window_seconds": 604800},
    "occurred_at": "2026-11-11T00:00:05.123Z",
}


def encoded(**changes: Any) -> bytes:
    document = {**CONTRACT_EXAMPLE, **changes}
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


def rejected(value: bytes | None) -> Rejected:
    result = parse_event(value)
    assert isinstance(result, Rejected), result
    return result


def test_contract_example_is_an_event() -> None:
    event = parse_event(encoded())
    occurred = datetime(2026, 11, 11, 0, 0, 5, 123000, tzinfo=UTC).timestamp()
    assert event == Event("7f1c2a", "u-10086", "double11-coupon", CONTRACT_EXAMPLE, occurred)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("2026-11-11T00:00:05Z", 1794355205.0),
        ("2026-11-11T08:00:05+08:00", 1794355205.0),
        ("2026-11-11T00:00:05", 1794355205.0),  # no zone: UTC
        (1794355205, 1794355205.0),  # a number: Unix seconds
    ],
)
def test_occurred_at_in_unix_seconds_at_intake_and_from_a_letter(
    written: object, seconds: float
) -> None:
    event = parse_event(encoded(occurred_at=written))
    assert isinstance(event, Event)
    assert event.occurred_at == seconds
    assert occurred_at_of({"occurred_at": written}) == seconds


@pytest.mark.parametrize("document", [{"occurred_at": "yesterday"}, {}, "text", None])
def test_a_letter_event_without_a_readable_time_has_none(document: object) -> None:
    assert occurred_at_of(document) is None


def test_extra_fields_are_kept_in_the_document() -> None:
    extra = {"tenant": "cn-east", "behavior": {"name": "x", "sku": ["a"]}}
    event = parse_event(encoded(**extra))
    assert isinstance(event, Event)
    assert event.document["tenant"] == "cn-east"
    assert event.document["behavior"] == {"name": "x", "sku": ["a"]}


def test_minimal_event_with_only_required_fields() -> None:
    value = encoded(event_type=..., schema_version=..., behavior=...)
    assert isinstance(parse_event(value), Event)


def test_non_ascii_ids() -> None:
    event = parse_event(encoded(user_id="用户-1", campaign_id="双十一"))
    assert isinstance(event, Event)
    assert (event.user_id, event.campaign_id) == ("用户-1", "双十一")


@pytest.mark.parametrize("value", [b"{not json", b"", b"   ", b'{"event_id": "a",}'])
def test_not_json(value: bytes) -> None:
    result = rejected(value)
    assert "JSON" in result.message
    assert result.document is None


def test_invalid_utf8() -> None:
    result = rejected(encoded(user_id="X").replace(b'"X"', b'"\xff\xfe"'))
    assert result.document is None
    assert "UTF-8" in result.message


def test_tombstone() -> None:
    assert rejected(None).message == "record has no value (tombstone)"


@pytest.mark.parametrize(("value", "kind"), [(b"[1, 2]", "list"), (b'"x"', "str"), (b"3", "int")])
def test_json_but_not_an_object(value: bytes, kind: str) -> None:
    result = rejected(value)
    assert result.message == f"expected a JSON object, got {kind}"
    assert result.document == json.loads(value)


@pytest.mark.parametrize("field", ["event_id", "user_id", "campaign_id", "occurred_at"])
def test_missing_required_field_is_named(field: str) -> None:
    result = rejected(encoded(**{field: ...}))
    assert f"{field}: Field required" in result.message
    assert isinstance(result.document, dict)  # kept for the dead letter
    assert field not in result.document


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", 12345),
        ("user_id", ["u-1"]),
        ("campaign_id", {"id": "x"}),
        ("user_id", ""),
        ("event_id", None),
        ("campaign_id", None),
        ("occurred_at", "yesterday"),
        ("behavior", "add_to_cart"),
        ("behavior", {"count": 5}),
    ],
)
def test_wrong_types_are_rejected_naming_the_field(field: str, value: Any) -> None:
    result = rejected(encoded(**{field: value}))
    assert result.message.startswith("does not match threshold-event.v1: ")
    assert field in result.message
