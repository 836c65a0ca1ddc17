"""Raw Kafka values into threshold events, or a rejection that says why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.events import (
    Event,
    Rejected,
    _plainly_valid,
    _validated,
    occurred_at_of,
    parse_event,
)

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


# The fast path at intake: it may decline any document (the model then decides), but what it
# accepts, the model accepts too and reads the same way.

_ABSENT = object()  # the field is left out of the document
_texts = st.one_of(st.text(max_size=300), st.just(""), st.text(min_size=255, max_size=258))
_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _texts, st.lists(_texts)
)
_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
_instants = st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), _offsets))


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Good values four times in five: most documents are then valid but for a field or two."""
    return st.integers(0, 4).flatmap(lambda i: bad if i == 0 else good)


@st.composite
def _plain_times(draw: st.DrawFn) -> str:
    when = draw(_instants)
    text = when.isoformat(timespec=draw(st.sampled_from(["seconds", "milliseconds", "auto"])))
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


_counts = st.one_of(st.none(), st.integers(), st.just(_ABSENT))
_behaviors = st.one_of(
    st.none(),
    st.just(_ABSENT),
    st.fixed_dictionaries(
        {"name": _mostly(st.text(), st.one_of(_values, st.just(_ABSENT)))},
        optional={
            "count": _mostly(_counts, _values),
            "threshold": _mostly(_counts, _values),
            "window_seconds": _mostly(_counts, _values),
            "sku": _values,
        },
    ).map(lambda d: {k: v for k, v in d.items() if v is not _ABSENT}),
)
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": _mostly(st.text(min_size=1, max_size=256), st.one_of(_values, st.just(_ABSENT))),
    "user_id": _mostly(st.text(min_size=1, max_size=256), st.one_of(_values, st.just(_ABSENT))),
    "campaign_id": _mostly(st.text(min_size=1, max_size=9), st.one_of(_values, st.just(_ABSENT))),
    "event_type": _mostly(st.one_of(st.text(), st.just(_ABSENT)), _values),
    "schema_version": _mostly(st.one_of(st.integers(), st.just(_ABSENT)), _values),
    "behavior": _mostly(_behaviors, _values),
    "occurred_at": _mostly(
        _plain_times(),
        st.one_of(_values, _plain_times().map(lambda t: t.replace("T", " ")), st.just(_ABSENT)),
    ),
}


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    drawn = {name: draw(values) for name, values in _FIELDS.items()}
    return {name: value for name, value in drawn.items() if value is not _ABSENT}


@settings(max_examples=2000, deadline=None)
@given(_documents())
def test_the_fast_path_accepts_only_what_the_model_accepts_and_reads_it_alike(
    document: dict[str, Any],
) -> None:
    fast = _plainly_valid(document)
    if fast is not None:
        assert fast == _validated(document)


def test_a_plain_event_takes_the_fast_path() -> None:
    for written in ("2026-11-11T00:00:05.123Z", "2026-11-11T08:00:05+08:00", "2026-11-11T00:00:05"):
        document = {**CONTRACT_EXAMPLE, "occurred_at": written}
        assert _plainly_valid(document) == _validated(document)
        assert _plainly_valid(document) is not None
