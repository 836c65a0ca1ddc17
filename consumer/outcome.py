"""What one attempt came to, and the single policy deciding what happens next."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from enum import StrEnum

from .config import RetryConfig


class Kind(StrEnum):
    DELIVERED = "delivered"  # a 2xx answer
    HTTP_STATUS = "http_status"  # any other answer
    TIMEOUT = "timeout"  # no complete answer within the channel's timeout
    CONNECTION = "connection"  # could not connect, or the connection broke
    BLOCKED_DESTINATION = "blocked_destination"  # the address is not allowed
    INVALID_EVENT = "invalid_event"  # the record is not a threshold event
    UNKNOWN_CAMPAIGN = "unknown_campaign"  # no campaign with that id is configured
    INTERNAL_ERROR = "internal_error"  # a bug of ours while sending; retried like a failure
    CIRCUIT_OPEN = "circuit_open"  # not sent: the channel's circuit breaker is open
    UNKNOWN_CHANNEL = "unknown_channel"  # a delayed delivery names a channel no longer configured
    UNWRITABLE = "unwritable"  # too large to park on a delay topic: dead-lettered instead
    MAX_AGE = "max_age"  # retried or waited longer than retry.max_age_seconds
    ATTRIBUTES_UNAVAILABLE = "attributes_unavailable"  # the attribute store did not answer
    CHANNEL_DISABLED = "channel_disabled"  # the channel is disabled (410 Gone, or an operator)
    EXPIRED = "expired"  # its oldest event is older than expire_after_seconds: not sent


_RETRYABLE_STATUS = frozenset({408, 425, 429})
GONE = 410  # the receiver says the endpoint is gone for good: the channel is disabled


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    retryable: bool
    status: int | None = None
    message: str = ""
    retry_after: float | None = None  # seconds, as the receiver asked

    @property
    def ok(self) -> bool:
        return self.kind is Kind.DELIVERED


def from_response(status: int, retry_after: str | None, excerpt: str) -> Outcome:
    if 200 <= status < 300:
        return Outcome(Kind.DELIVERED, retryable=False, status=status, message=excerpt)
    retryable = status in _RETRYABLE_STATUS or 500 <= status < 600
    return Outcome(
        Kind.HTTP_STATUS,
        retryable=retryable,
        status=status,
        message=excerpt,
        retry_after=parse_retry_after(retry_after) if retryable else None,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Wait(StrEnum):
    """Why a delivery moved to the delay path; only RETRY uses up a round of the schedule."""

    RETRY = "retry"  # a real attempt failed: the next step of the schedule
    CIRCUIT_OPEN = "circuit_open"  # the channel's circuit is open: wait for its next probe
    PARKED = "parked"  # the lane has more work than it can send within the backlog bound
    THROTTLED = "throttled"  # the receiver asked us to slow down (429, Retry-After)
    BEHIND = "behind"  # ordering per_user: an earlier delivery of the same user comes first


class Limit(StrEnum):
    """Which limit ended a delivery that could still have been retried."""

    SCHEDULE = "schedule"  # every attempt of the retry schedule was made
    MAX_AGE = "max_age"  # older than retry.max_age_seconds, however it waited


@dataclass(frozen=True, slots=True)
class Done:
    """Delivered: nothing more to do."""


@dataclass(frozen=True, slots=True)
class RetrySoon:
    """Try again in-process after `delay` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class Delay:
    """Hand to the delay path, to be attempted again in `seconds`."""

    seconds: float
    why: Wait = Wait.RETRY

    @property
    def uses_round(self) -> bool:
        """Only a failed attempt brings a delivery closer to its dead letter; waiting for a
        probe, a slower receiver or room in the lane does not."""
        return self.why is Wait.RETRY


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Write a dead letter with this reason; `limit` says which limit ended a retryable one."""

    reason: Outcome
    limit: Limit | None = None


Decision = Done | RetrySoon | Delay | GiveUp


def backoff(attempt: int, retry: RetryConfig, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2**(attempt-1))].

    Full jitter spreads the retries of many deliveries that failed together, so a recovering
    receiver is not hit by synchronised waves (AWS Architecture Blog, "Exponential Backoff
    and Jitter").
    """
    ceiling = min(retry.backoff_max_ms, retry.backoff_initial_ms * 2 ** (attempt - 1))
    return rng.uniform(0, ceiling) / 1000


def decide(
    outcome: Outcome,
    attempts: int,
    rounds: int,
    age: float,
    retry: RetryConfig,
    rng: random.Random,
) -> Decision:
    """Every retry and dead-letter rule for the answer to a real attempt lives here.

    `attempts` counts the attempts made so far, this one included; `rounds` counts the
    schedule delays already used; `age` is how long ago the delivery was created. Fresh
    deliveries get `quick_attempts` in-process tries, then one try after each delay of the
    schedule, then a dead letter. A throttling receiver (429) is waited for without using a
    round, within the delivery's maximum age.
    """
    if outcome.ok:
        return Done()
    if outcome.status == GONE:
        # Not sent again, and kept with the deliveries held back after it, so that one replay
        # sends them all once the channel is enabled again.
        return refused(f"the receiver answered 410 Gone: {outcome.message}", GONE)
    if not outcome.retryable:
        return GiveUp(outcome)
    if age >= retry.max_age:
        return GiveUp(outcome_of_age(outcome, age, retry), Limit.MAX_AGE)
    asked = outcome.retry_after or 0.0
    in_quick_phase = rounds == 0 and attempts < retry.quick_attempts
    if in_quick_phase and asked <= retry.retry_after_max_seconds:
        return RetrySoon(max(backoff(attempts, retry, rng), asked))
    if outcome.status == 429:
        # The receiver is up and asks for less: not a failure that should end the delivery.
        return Delay(max(asked, _schedule_step(retry, rounds)), Wait.THROTTLED)
    if rounds < len(retry.schedule_seconds):
        # Retry-After may push the next try later, never earlier.
        return Delay(max(retry.schedule_seconds[rounds], asked))
    return GiveUp(outcome, Limit.SCHEDULE)


def refused(why: str, status: int | None = None) -> GiveUp:
    """A delivery to a disabled channel: a dead letter (`channel_disabled`), never a request;
    `dlq replay --reason channel_disabled` sends it once the channel is enabled again."""
    return GiveUp(Outcome(Kind.CHANNEL_DISABLED, retryable=False, status=status, message=why))


def wait_or_expire(
    seconds: float, why: Wait, age: float, last_error: Outcome | None, retry: RetryConfig
) -> Delay | GiveUp:
    """A delivery that may not be sent now (open circuit, full lane) waits on the delay path,
    unless it is already older than its maximum age."""
    if age >= retry.max_age:
        last = last_error or Outcome(Kind.CIRCUIT_OPEN, retryable=True, message=why.value)
        return GiveUp(outcome_of_age(last, age, retry), Limit.MAX_AGE)
    return Delay(seconds, why)


def deadline(occurred_at: float, limit: float | None, now: float) -> float | None:
    """When a delivery stops being worth sending: `limit` seconds after its oldest event
    occurred (an `occurred_at` in the future, clock skew, counts as `now`); None: never."""
    return None if limit is None else min(occurred_at, now) + limit


def expired(expires_at: float | None, now: float) -> GiveUp | None:
    """A trigger is worth something only while fresh: past its deadline a delivery is not
    sent but dead-lettered, wherever it is (intake, each attempt, back from a delay topic,
    a replay)."""
    if expires_at is None or now < expires_at:
        return None
    late = now - expires_at
    return GiveUp(
        Outcome(
            Kind.EXPIRED,
            retryable=False,
            message=f"not sent: {late:.0f} s past its freshness limit (expire_after_seconds)",
        )
    )


def outcome_of_age(last: Outcome, age: float, retry: RetryConfig) -> Outcome:
    """The dead-letter reason of an expired delivery: `max_age`, with its last real error."""
    detail = f"{last.kind.value} {last.status}" if last.status is not None else last.kind.value
    return Outcome(
        Kind.MAX_AGE,
        retryable=False,
        status=last.status,
        message=(
            f"gave up after {age:.0f}s (retry.max_age_seconds is {retry.max_age:.0f}); "
            f"last error: {detail}: {last.message}"
        )[:2000],
    )


def _schedule_step(retry: RetryConfig, rounds: int) -> float:
    """The delay of the schedule step a delivery is at (the last one once it is used up)."""
    steps = retry.schedule_seconds
    if not steps:
        return retry.backoff_max_ms / 1000
    return steps[min(rounds, len(steps) - 1)]
