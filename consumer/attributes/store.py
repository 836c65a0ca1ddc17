"""The attribute store interface and its one operational error; nothing concrete lives here."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
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
