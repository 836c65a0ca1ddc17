"""A record of the attributes topic: a user's whole attributes, a tombstone, or a record to skip.

Key: the user id (UTF-8, 1 to 256 characters, as an event's `user_id`). Value: the user's
attributes as one JSON object, or null (a tombstone) to delete the user.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import orjson

from consumer.attributes.store import Update
from consumer.events import too_deep

MAX_USER_ID = 256  # an event's user_id is at most this long: a longer key names nobody


class Skip(StrEnum):
    """Why a record of the attributes topic is passed over."""

    BAD_KEY = "bad_key"  # no key, not UTF-8, empty or longer than 256 characters
    TOO_LARGE = "too_large"  # the value is over attributes.max_value_bytes
    NOT_JSON = "not_json"  # the value is not UTF-8 JSON
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object
    TOO_DEEP = "too_deep"  # nested more than 64 levels (no webhook body could carry it)


class AttributeRecord(Protocol):
    """The part of a Kafka record the follower reads (aiokafka's ConsumerRecord fits)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def decode(record: AttributeRecord, max_value_bytes: int) -> Update | Skip:
    key = record.key
    try:
        user_id = key.decode("utf-8") if key is not None else ""
    except UnicodeDecodeError:
        return Skip.BAD_KEY
    if not 0 < len(user_id) <= MAX_USER_ID:
        return Skip.BAD_KEY
    value = record.value
    if value is None:
        return Update(user_id, None, record.partition, record.offset, record.timestamp)
    if len(value) > max_value_bytes:
        return Skip.TOO_LARGE
    try:
        attributes = orjson.loads(value)
    except orjson.JSONDecodeError:
        return Skip.NOT_JSON
    if not isinstance(attributes, dict):
        return Skip.NOT_AN_OBJECT
    if too_deep(value, attributes):
        return Skip.TOO_DEEP
    return Update(user_id, attributes, record.partition, record.offset, record.timestamp)


def shown_key(key: bytes | None) -> str:
    """A key for a log line: text when it is, bounded either way."""
    if key is None:
        return "(none)"
    return key[:120].decode("utf-8", "backslashreplace") + ("..." if len(key) > 120 else "")
