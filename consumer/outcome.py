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


_RETRYABLE_STATUS = frozenset({408, 425, 429})


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


@dataclass(frozen=True, slots=True)
class Done:
    """Delivered: nothing more to do."""


@dataclass(frozen=True, slots=True)
class RetrySoon:
    """Try again in-process after `delay` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class Delay:
    """Hand to the delay path, to be attempted again in `seconds`.

    `uses_round` is False only for parking (a congested lane): that is no failure of the
    receiver, so it must not bring the delivery closer to its dead letter.
    """

    seconds: float  # until due
    level: float  # the schedule delay whose topic carries it
    uses_round: bool = True


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Write a dead letter with this reason."""

    reason: Outcome


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
    outcome: Outcome, attempts: int, rounds: int, retry: RetryConfig, rng: random.Random
) -> Decision:
    """Every retry and dead-letter rule lives here.

    `attempts` counts the attempts made so far, this one included; `rounds` counts the
    schedule delays already used. Fresh deliveries get `quick_attempts` in-process tries; then
    one try after each delay of the schedule; then a dead letter.
    """
    if outcome.ok:
        return Done()
    if not outcome.retryable:
        return GiveUp(outcome)
    asked = outcome.retry_after or 0.0
    in_quick_phase = rounds == 0 and attempts < retry.quick_attempts
    if (
        in_quick_phase
        and outcome.kind is not Kind.CIRCUIT_OPEN
        and asked <= retry.retry_after_max_seconds  # a longer wish is honoured on the delay path
    ):
        return RetrySoon(max(backoff(attempts, retry, rng), asked))
    if rounds < len(retry.schedule_seconds):
        # Retry-After may push the next try later, never earlier; the record then rides the
        # topic of the shortest delay that covers its wait, so it never sits at the head of a
        # partition whose other records fall due sooner.
        wait = max(retry.schedule_seconds[rounds], min(asked, max(retry.schedule_seconds)))
        level = min(d for d in retry.schedule_seconds if d >= wait)
        return Delay(wait, level)
    return GiveUp(outcome)


def park(retry: RetryConfig) -> Delay:
    """A congested lane's overflow: wait on the delay path without using up the schedule."""
    return Delay(retry.park_seconds, retry.park_seconds, uses_round=False)
