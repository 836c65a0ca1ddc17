"""Deliveries of one channel bound for one delay topic, written as a single delay record.

A failing receiver sends everything addressed to it to the delay path. Written one record
each, those held deliveries cost the healthy channels a produce, a fetch and a rewrite per
delivery for as long as the outage lasts. Deliveries that keep no order with others (written
without a key) and meet on their way to the same topic for the same channel share one record
instead, as long as the writer is busy: one produce, one read-back, and one rewrite while the
circuit stays open. A record of one delivery keeps the single-delivery format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

BUNDLE_SCHEMA_VERSION = 2
# Far below the delay topics' 8 MiB and the producer's request limit: a bundle is never what
# makes a write fail, and one record read back stays a modest amount of work.
MAX_BUNDLE_BYTES = 64 * 1024
MAX_BUNDLE_DELIVERIES = 200

_OPEN = b'{"schema_version":%d,"deliveries":[' % BUNDLE_SCHEMA_VERSION
_CLOSE = b"]}"


@dataclass(slots=True)
class Member:
    """One delivery of a bundle: its encoded delay record and what to do once written."""

    value: bytes
    due_ms: int
    created_ms: int | None
    expires_ms: int | None
    on_written: Callable[[], None]
    on_unwritable: Callable[[Exception], None] | None


@dataclass(slots=True)
class Written:
    """What the record of a sealed bundle says: its value and the bundle-wide header values."""

    value: bytes
    due_ms: int  # the earliest: nobody waits longer than asked
    created_ms: int | None  # the oldest: the age limit looks at the record as a whole
    expires_ms: int | None  # the soonest: a stale member gets the record decoded


@dataclass(slots=True)
class Bundle:
    """Open until the writer takes it; members only join an open bundle with room left."""

    members: list[Member] = field(default_factory=list)
    size: int = 0
    sealed: Written | None = None

    def fits(self, member: Member) -> bool:
        if self.sealed is not None or len(self.members) >= MAX_BUNDLE_DELIVERIES:
            return False
        return not self.members or self.size + len(member.value) + 1 <= MAX_BUNDLE_BYTES

    def add(self, member: Member) -> None:
        self.members.append(member)
        self.size += len(member.value) + 1

    def seal(self) -> Written:
        """Closes the bundle (idempotent: a write tried again sends the same record)."""
        if self.sealed is None:
            members = self.members
            value = (
                members[0].value
                if len(members) == 1
                else _OPEN + b",".join(m.value for m in members) + _CLOSE
            )
            self.sealed = Written(
                value,
                min(m.due_ms for m in members),
                _least(m.created_ms for m in members),
                _least(m.expires_ms for m in members),
            )
        return self.sealed

    def written(self) -> None:
        for member in self.members:
            member.on_written()


def _least(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None
