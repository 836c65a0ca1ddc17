"""A delivery: one request's worth of work for one channel, and the records waiting on it."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from .catalog import Channel
from .outcome import Outcome
from .tracecontext import TraceContext

# Fixed forever: changing it changes every delivery id receivers deduplicate on.
DELIVERY_NAMESPACE: Final = uuid.UUID("6c1f3f2e-3f0e-5d8a-9a57-1d0f5b2c7e41")


_NAMESPACE_BYTES: Final = DELIVERY_NAMESPACE.bytes


def delivery_id(channel: str, event_ids: Sequence[str]) -> str:
    """UUIDv5 of the channel and the sorted event ids: the same work always gets the same id.

    Computed as uuid.uuid5 does (RFC 4122: SHA-1 of namespace and name, version and variant
    bits set), without building a UUID object: it runs once per delivery."""
    # JSON, not a joined string: ids may contain any character, and ["a\nb"] != ["a", "b"].
    name = orjson.dumps([channel, *sorted(event_ids)])
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int
    offset: int


class Owner(Protocol):
    """The partition a record was read from, as long as this process owns it."""

    revoked: bool  # the partition moved away: its unfinished work is the next owner's

    def finished(self, offset: int) -> None: ...


class Ticket:
    """Counts the deliveries a record still waits for; the record is finished at zero."""

    __slots__ = ("owner", "remaining", "source")

    def __init__(self, source: Source, remaining: int, owner: Owner) -> None:
        self.source = source
        self.remaining = remaining
        self.owner = owner
        if remaining == 0:
            owner.finished(source.offset)

    def done(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.owner.finished(self.source.offset)


@dataclass(slots=True)
class Delivery:
    id: str
    channel: Channel
    campaign_id: str
    template_param: Mapping[str, Any]
    user_attr: list[dict[str, Any]]
    events: list[dict[str, Any]]
    sources: list[Source]
    tickets: list[Ticket] = field(default_factory=list)
    attempts: int = 0  # real requests made, this one included once it is sent
    rounds: int = 0  # delays of the retry schedule used so far (failed attempts only)
    parks: int = 0  # times parked on the delay path because its lane was full
    created_at: float = field(default_factory=time.time)  # for retry.max_age_seconds
    expires_at: float | None = None  # Unix time it stops being worth sending; None: never
    first_attempt_at: float | None = None
    last_attempt_at: float | None = None
    last_error: Outcome | None = None
    trace: TraceContext | None = None  # the trace of its (first) record, continued per request
    span_id: str | None = None  # the span of the latest request, in its traceparent

    def finish(self) -> None:
        """Called once, when the delivery reached a terminal hand-off."""
        tickets, self.tickets = self.tickets, []
        for ticket in tickets:
            ticket.done()

    def orphaned(self) -> bool:
        """Every record it carries belongs to a partition this process no longer owns: the
        next owner redoes the work, so sending it here would only make a duplicate."""
        tickets = self.tickets
        if len(tickets) == 1:  # the usual case, asked twice per attempt: no generator
            return tickets[0].owner.revoked
        return bool(tickets) and all(t.owner.revoked for t in tickets)

    def event_ids(self) -> list[str]:
        return [e["event_id"] for e in self.events if isinstance(e, dict) and "event_id" in e]
