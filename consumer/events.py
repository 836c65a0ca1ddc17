"""The input record: a threshold event, and how a raw Kafka value becomes one or a rejection."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# Far beyond any real event, and far below what the dead-letter and delay-path encoders can
# write (pydantic stops at about 250 levels): a deeper record could never be handed off.
MAX_DEPTH = 64


class Behavior(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    count: int | None = None
    threshold: int | None = None
    window_seconds: int | None = None


class ThresholdEvent(BaseModel):
    """`schemas/threshold-event.v1.json`. Unknown fields are kept and ignored."""

    model_config = ConfigDict(extra="allow", frozen=True, title="ThresholdEvent")

    event_id: Annotated[str, Field(min_length=1, max_length=256)]
    event_type: str = "user.threshold.reached"
    schema_version: int = 1
    user_id: Annotated[str, Field(min_length=1, max_length=256)]
    campaign_id: Annotated[str, Field(min_length=1, max_length=256)]
    behavior: Behavior | None = None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event plus the JSON object it came from (kept verbatim for dead letters)."""

    event_id: str
    user_id: str
    campaign_id: str
    document: dict[str, Any]
    occurred_at: float = 0.0  # Unix seconds; a time without a zone is read as UTC


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a record is not an event; `document` is the parsed JSON, or None if it was not JSON."""

    message: str
    document: Any | None


def parse_event(value: bytes | None) -> Event | Rejected:
    if value is None:
        return Rejected("record has no value (tombstone)", None)
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejected(f"not valid UTF-8 JSON: {exc}", None)
    if too_deep(value, document):
        # Kept as the raw value: the parsed form is what could not be written.
        return Rejected(f"nested more than {MAX_DEPTH} levels deep", None)
    if not isinstance(document, dict):
        return Rejected(f"expected a JSON object, got {type(document).__name__}", document)
    return _plainly_valid(document) or _validated(document)


def _validated(document: dict[str, Any]) -> Event | Rejected:
    """The model's verdict, with its messages."""
    try:
        event = ThresholdEvent.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return Rejected(f"does not match threshold-event.v1: {problems}", document)
    return Event(
        event.event_id, event.user_id, event.campaign_id, document, epoch(event.occurred_at)
    )


_ID_FIELDS = ("event_id", "user_id", "campaign_id")
_BEHAVIOR_COUNTS = ("count", "threshold", "window_seconds")
# RFC 3339 as producers write it: what `datetime.fromisoformat` reads exactly as the model does.
_PLAIN_TIME = re.compile(
    r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?"
)


def _plainly_valid(document: dict[str, Any]) -> Event | None:
    """The event of a document written the plain way (what nearly every producer writes),
    checked without building the model; None when anything is unusual, and then the model
    decides. It never accepts a document the model would reject, nor reads one differently
    (tests/unit/test_events.py checks both on generated documents)."""
    ids: list[str] = []
    for name in _ID_FIELDS:
        value = document.get(name)
        if type(value) is not str or not 0 < len(value) <= 256:
            return None
        ids.append(value)
    if type(document.get("event_type", "")) is not str:
        return None
    if type(document.get("schema_version", 1)) is not int:
        return None
    behavior = document.get("behavior")
    if behavior is not None:
        if type(behavior) is not dict or type(behavior.get("name")) is not str:
            return None
        for name in _BEHAVIOR_COUNTS:
            count = behavior.get(name)
            if count is not None and type(count) is not int:
                return None
    when = document.get("occurred_at")
    if type(when) is not str or _PLAIN_TIME.fullmatch(when) is None:
        return None
    try:
        occurred = datetime.fromisoformat(when)
    except ValueError:  # a day the month does not have
        return None
    event_id, user_id, campaign_id = ids
    return Event(event_id, user_id, campaign_id, document, epoch(occurred))


def epoch(when: datetime) -> float:
    """Unix seconds of a parsed `occurred_at`; a time without a zone is UTC."""
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


_WHEN: TypeAdapter[datetime] = TypeAdapter(datetime)


def occurred_at_of(document: Any) -> float | None:
    """The `occurred_at` of an event document (a dead letter's, say) in Unix seconds, read as
    at intake; None when it has none that reads."""
    if not isinstance(document, dict):
        return None
    try:
        return epoch(_WHEN.validate_python(document.get("occurred_at")))
    except ValidationError:
        return None


def too_deep(value: bytes, document: Any) -> bool:
    """Whether JSON `document`, parsed from `value`, nests more than MAX_DEPTH levels."""
    # Nesting needs an opening bracket per level: counting them (in C) spares the walk for
    # every ordinary document.
    return value.count(b"{") + value.count(b"[") > MAX_DEPTH and _deeper_than(document, MAX_DEPTH)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` deep; iterative, so never recursing."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        if children and depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
