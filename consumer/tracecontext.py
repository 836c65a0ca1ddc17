"""W3C Trace Context: an input record's `traceparent` and `tracestate`, continued into each
webhook request under the same trace id with a span id of its own.

The record's headers are read as the Trace Context spec says (version 00, and the first four
fields of a later version); anything else is ignored, so a malformed or hostile header costs
the trace, never the delivery. `tracestate` is passed on unchanged when it is printable ASCII
of a bounded length: it goes into an HTTP header of ours.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from typing import Final, NamedTuple

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
# The spec lets a vendor drop a tracestate longer than 512 characters; so do we.
MAX_TRACESTATE: Final = 512

_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_PARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_STATE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: no CR, LF or other control bytes


class TraceContext(NamedTuple):
    """Where our work on a record hangs in its trace.

    `span_id` is our span for the record (the parent of every attempt's span); `parent_id` the
    upstream span it continues, when known (a delivery read back from a delay topic knows only
    ours). Immutable, and a tuple rather than a frozen dataclass: one is made per traced
    record, and a frozen dataclass costs several times as much to build."""

    trace_id: str  # 32 lowercase hex digits, not all zero
    span_id: str  # 16 lowercase hex digits, not all zero
    flags: str  # 2 hex digits; bit 0 is "sampled"
    state: str | None = None  # tracestate, passed on unchanged
    parent_id: str | None = None

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)

    @property
    def traceparent(self) -> str:
        """Our span as a traceparent: what the delay path and dead letters carry."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self, span_id: str) -> str:
        """The traceparent of a request made under our span, with its own span id."""
        return f"00-{self.trace_id}-{span_id}-{self.flags}"


def new_span_id() -> str:
    """64 random bits, as the OpenTelemetry SDK makes them (ids need to be unique, not secret)."""
    while True:
        span = f"{_bits(64):016x}"
        if span != _ZERO_SPAN:
            return span


_bits = random.getrandbits


def parse(traceparent: str, tracestate: str | None = None) -> TraceContext | None:
    """The context a traceparent names (its span as ours), or None when it is not valid."""
    fields = _fields(traceparent)
    if fields is None:
        return None
    trace_id, span_id, flags = fields
    return TraceContext(trace_id, span_id, flags, _valid_state(tracestate))


def _fields(traceparent: str) -> tuple[str, str, str] | None:
    """Trace id, parent id and flags of a valid traceparent."""
    match = _PARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags


def from_headers(headers: Iterable[tuple[str, bytes]] | None) -> TraceContext | None:
    """The trace a Kafka record continues, with a new span id of ours for the record; None
    without a valid `traceparent`."""
    parent: bytes | None = None
    state: bytes | None = None
    for key, value in headers or ():
        if key == TRACEPARENT and parent is None:
            parent = value
        elif key == TRACESTATE and state is None:
            state = value
    if parent is None:
        return None
    try:
        fields = _fields(parent.decode("ascii"))
    except (UnicodeDecodeError, AttributeError):
        return None
    if fields is None:
        return None
    trace_id, upstream, flags = fields
    # A tracestate that is not ASCII is dropped (the replacement character is refused),
    # without costing the trace.
    text = None if state is None else _valid_state(state.decode("ascii", "replace"))
    return TraceContext(trace_id, new_span_id(), flags, text, upstream)


def _valid_state(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_TRACESTATE or not _STATE.fullmatch(value):
        return None
    return value
