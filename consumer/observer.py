"""What happened, for whoever listens: one details type per transition, hooks subscribe.

The listener, the lanes and the hand-offs call `Observer.emit` at their transitions; logs,
metrics and the status page are hooks (stamina's instrumentation is the model). Nothing on the
hot path formats, labels or logs by itself, and a hook never reaches back into the lanes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, get_args, runtime_checkable

from .delivery import Delivery, Source
from .outcome import Limit, Outcome, Wait
from .tracecontext import TraceContext


@dataclass(frozen=True, slots=True)
class Attempted:
    """One real request was answered (or failed to be)."""

    delivery: Delivery  # attempts already counts this request
    outcome: Outcome
    seconds: float  # the request alone
    limiter_wait: float  # how long the rate limit held it before


@dataclass(frozen=True, slots=True)
class RetryingSoon:
    """A failed attempt is tried again in-process after `delay` seconds."""

    delivery: Delivery
    delay: float


@dataclass(frozen=True, slots=True)
class Delayed:
    """The delivery was handed to the delay path (written durably once `on_written` ran)."""

    delivery: Delivery
    seconds: float
    why: Wait


@dataclass(frozen=True, slots=True)
class Held:
    """A delay record came back while its channel's circuit is still open, and went back to
    wait for the next probe without being decoded."""

    channel: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Redelivered:
    """A delay record came back as a delivery."""

    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Delivered:
    """A 2xx answer: the delivery is done."""

    delivery: Delivery


@dataclass(frozen=True, slots=True)
class GaveUp:
    """A dead letter is being written for this reason."""

    channel: str | None  # None for a record that never became a delivery
    delivery: Delivery | None
    reason: Outcome
    limit: Limit | None


@dataclass(frozen=True, slots=True)
class Dropped:
    """Queued work of a revoked partition was not sent: its next owner redoes it."""

    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Skipped:
    """A delay record of another deployment (consumer group) was passed over."""

    topic: str
    group: str


@dataclass(frozen=True, slots=True)
class OffsetsTruncated:
    """A commit's metadata could not hold every finished offset above it: after a crash the
    ones left out are done again (duplicates, never losses)."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class CircuitChanged:
    channel: str
    state: str  # closed | open | half_open
    failures: int
    cooldown: float


@dataclass(frozen=True, slots=True)
class HandoffChanged:
    """A background write began failing (`failing`), or wrote again after failing."""

    what: str  # "delay" | "dead letter"
    failing: bool
    failed_writes: int  # failed tries since it began failing
    error: str


@dataclass(frozen=True, slots=True)
class Consumed:
    """One fetched batch of one partition was handed on (one emit per batch, never per record)."""

    topic_kind: str  # "input" | "delay"
    records: int


@dataclass(frozen=True, slots=True)
class Committed:
    """Offsets were committed."""

    seconds: float
    partitions: int


@dataclass(frozen=True, slots=True)
class CommitFailed:
    """A commit failed; the next interval (or the revoke listener) commits instead."""

    seconds: float
    error: str


@dataclass(frozen=True, slots=True)
class InputLag:
    """After a commit interval: records between the committed offset (or the position, before
    the first commit) and the end of each owned input partition that has been fetched."""

    partitions: tuple[tuple[int, int], ...]  # (partition, records behind)


@dataclass(frozen=True, slots=True)
class PartitionsOwned:
    """The input partitions this member owns now, after an assignment or a revocation."""

    partitions: frozenset[int]
    assigned: bool  # True after an assignment (the group was joined), False after a revoke


@dataclass(frozen=True, slots=True)
class LaneLoad:
    """A busy lane's queue and requests under way, sampled each tick; zeros once when idle."""

    channel: str
    queued: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class RedisChanged:
    """Redis began failing (`available` False) or answered again."""

    available: bool
    error: str


@dataclass(frozen=True, slots=True)
class AttributesCorrupt:
    """A user's stored attributes cannot be read (another program's value under the prefix):
    sent as a user the store does not have."""

    key: str  # where it is stored
    reason: str  # what is wrong, never the value
    first: bool  # the first time this process met this user so


@dataclass(frozen=True, slots=True)
class ConfigReloaded:
    """A new config was read: applied, or rejected (the running config is kept)."""

    applied: bool
    problems: int
    channels: tuple[str, ...] = ()  # applied: the channels configured from now on


@dataclass(frozen=True, slots=True)
class ChannelStateChanged:
    """A channel was disabled (a 410 answer, an operator) or enabled, here or on any replica."""

    channel: str
    disabled: bool
    by: str  # "receiver" for a 410 answer, else who ran `channels disable|enable`
    reason: str
    at: float  # Unix time of the change
    status: int | None = None  # 410 when the receiver asked


@dataclass(frozen=True, slots=True)
class RecordsTraced:
    """Records carrying a trace were turned into deliveries (emitted once per fetched batch,
    and only while a hook records spans): their consume and attribute look-up spans."""

    records: tuple[tuple[TraceContext, Source], ...]
    started_ns: int  # Unix time in nanoseconds
    ended_ns: int
    lookup_ns: tuple[int, int] | None  # the batch's attribute look-up, when there was one


@dataclass(frozen=True, slots=True)
class HandedOff:
    """A traced delivery's hand-off became durable (only while a hook records spans)."""

    what: str  # "delay" | "dead letter"
    traceparent: str  # the record's span, as the delivery carries it
    tracestate: str | None
    delivery_id: str | None
    channel: str | None
    started_ns: int  # Unix time in nanoseconds: when it was handed to the writer
    ended_ns: int  # when Kafka acknowledged it


@dataclass(frozen=True, slots=True)
class AttributesApplied:
    """One batch of the attributes topic reached the store (one emit per batch)."""

    stored: int
    deleted: int
    superseded: int  # a newer value of the user was stored already
    skipped: tuple[tuple[str, int], ...]  # (reason, records) that hold no user's attributes


@dataclass(frozen=True, slots=True)
class AttributesProgress:
    """How far the attributes follower has read; about once a second."""

    records: int  # read since start
    lag: int  # records between its position and the end of the topic
    caught_up: bool  # read to the end the topic had at start: deliveries may begin


@dataclass(frozen=True, slots=True)
class OccurredInFuture:
    """An event's occurred_at was far ahead of this replica's clock; read as now for expiry."""

    seconds: float  # how far ahead


class Stage(StrEnum):
    CONFIG_LOADED = "config_loaded"  # the config validated and the catalog built
    WAITING_FOR_KAFKA = "waiting_for_kafka"  # at start, Kafka unreachable: retrying
    PRODUCER_STARTED = "producer_started"  # hand-offs can be written
    DRAINING = "draining"  # stopping: no new records, in-flight work finishing
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The service reached a stage of its start or its stop."""

    stage: Stage


Details = (
    Attempted
    | RetryingSoon
    | Delayed
    | Held
    | Redelivered
    | Delivered
    | GaveUp
    | Dropped
    | Skipped
    | OffsetsTruncated
    | CircuitChanged
    | HandoffChanged
    | Consumed
    | Committed
    | CommitFailed
    | InputLag
    | PartitionsOwned
    | LaneLoad
    | RedisChanged
    | AttributesCorrupt
    | ConfigReloaded
    | ChannelStateChanged
    | RecordsTraced
    | HandedOff
    | AttributesApplied
    | AttributesProgress
    | OccurredInFuture
    | Lifecycle
)
Hook = Callable[[Details], None]
Handler = Callable[[Any], None]  # takes the one details type it is subscribed under
DETAILS_TYPES: tuple[type, ...] = get_args(Details)


@runtime_checkable
class Subscriber(Protocol):
    """A hook that names what it handles: only those details reach it, each straight to its
    handler. A hook without `subscriptions` hears every transition."""

    @property
    def subscriptions(self) -> Mapping[type, Handler]: ...


def _routes(hooks: Iterable[Hook]) -> dict[type, tuple[Handler, ...]]:
    routes: dict[type, list[Handler]] = {kind: [] for kind in DETAILS_TYPES}
    for hook in hooks:
        if isinstance(hook, Subscriber):
            for kind, handler in hook.subscriptions.items():
                routes[kind].append(handler)
        else:
            for handlers in routes.values():
                handlers.append(hook)
    return {kind: tuple(handlers) for kind, handlers in routes.items()}


class Observer:
    """Fans each transition out to the hooks that handle its type, in the order they were
    added; with no hooks, emitting is a no-op. The routes per type are built when a hook is
    added, so a transition nobody handles costs one dict look-up.

    `spans` says whether a hook records spans: only then are the details that exist only for
    spans (`RecordsTraced`, `HandedOff`) emitted at all, so tracing off costs nothing."""

    __slots__ = ("_hooks", "_routes", "spans")

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self._hooks: tuple[Hook, ...] = tuple(hooks)
        self._routes = _routes(self._hooks)
        self.spans = False

    def add(self, hook: Hook, *, spans: bool = False) -> None:
        self._hooks = (*self._hooks, hook)
        self._routes = _routes(self._hooks)
        self.spans = self.spans or spans

    def emit(self, details: Details) -> None:
        for handler in self._routes[type(details)]:
            handler(details)


NO_OBSERVER = Observer()
