"""Which of two values of a user is newer: the rule every followed store applies.

A value carries where it was read: the topic (as a 32-bit tag of its name), partition, offset and
record timestamp. Within one partition the offset orders values exactly (all records of a key
land on one partition). Across partitions, which happens only after the topic gained partitions,
the record timestamp decides. A value from another topic (the config names a new one) always
wins: offsets of different topics say nothing about each other. The Redis store runs the same
rule in Lua (`redis_followed.py`); keep the two alike.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from consumer.attributes.store import Update


class Version(NamedTuple):
    topic: int
    partition: int
    offset: int
    timestamp_ms: int


def topic_tag(topic: str) -> int:
    """A small, stable number for a topic name, stored with every value."""
    return int.from_bytes(hashlib.sha1(topic.encode(), usedforsecurity=False).digest()[:4], "big")


def version_of(tag: int, update: Update) -> Version:
    return Version(tag, update.partition, update.offset, update.timestamp_ms)


def newer(incoming: Version, stored: Version | None) -> bool:
    """Whether `incoming` may replace `stored`. Equal is not newer: reading a record again
    (a restart, a second replica) writes nothing."""
    if stored is None or stored.topic != incoming.topic:
        return True
    if stored.partition == incoming.partition:
        return incoming.offset > stored.offset
    return incoming.timestamp_ms > stored.timestamp_ms


def newest_per_user(tag: int, updates: list[Update]) -> dict[str, Update]:
    """The update of each user that wins among those of one batch (in read order)."""
    latest: dict[str, Update] = {}
    for update in updates:
        held = latest.get(update.user_id)
        if held is None or newer(version_of(tag, update), version_of(tag, held)):
            latest[update.user_id] = update
    return latest
