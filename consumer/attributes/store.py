"""The attribute store interfaces, what a followed topic writes, and the one operational error.

Nothing concrete lives here: the backends import this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class AttributesUnavailable(Exception):
    """The store cannot answer now (down, timing out, read-only, locked); worth retrying later.

    Every backend raises this and only this for operational failures, with a message that names
    the store but never a password.
    """


class AttributeStore(Protocol):
    """Per-user attribute lookup used when building webhooks."""

    async def get_many(self, user_ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """Return attributes for the given users; unknown users are absent."""
        ...

    async def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Upsert users, replacing (not merging) their attributes."""
        ...

    async def close(self) -> None:
        """Release resources; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class Update:
    """One record of the attributes topic: a user's whole attributes, or None (a tombstone) to
    delete the user. Where it was read decides whether it is newer than what is stored."""

    user_id: str
    attributes: Mapping[str, Any] | None
    partition: int
    offset: int
    timestamp_ms: int  # the record's timestamp: compared only across partitions


@dataclass(frozen=True, slots=True)
class Applied:
    """What one `apply` did with its updates."""

    stored: int = 0
    deleted: int = 0
    superseded: int = 0  # not written: a newer value of the user was stored, or in the batch


class FollowedStore(AttributeStore, Protocol):
    """A store the attributes follower keeps current from a topic. The position it read to is
    kept with the data, and a write never replaces a newer value: replicas following into one
    store, or a slow one, cannot put an older value back."""

    async def positions(self, topic: str) -> dict[int, int]:
        """Per partition of `topic`, the first offset not yet written; absent: from the start."""
        ...

    async def apply(
        self, topic: str, updates: Sequence[Update], positions: Mapping[int, int]
    ) -> Applied:
        """Write each update unless the user's stored value is newer, and move the positions
        forward (never back). Applying the same updates again changes nothing."""
        ...
