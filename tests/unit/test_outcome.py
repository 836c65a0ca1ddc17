"""Classifying answers, reading Retry-After, and the one policy deciding what comes next."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.config import RetryConfig
from consumer.outcome import (
    Delay,
    Done,
    GiveUp,
    Kind,
    Limit,
    Outcome,
    RetrySoon,
    Wait,
    backoff,
    decide,
    from_response,
    parse_retry_after,
    refused,
    wait_or_expire,
)

# No delay schedule configured: after the quick attempts comes the dead letter.
RETRY = RetryConfig(
    quick_attempts=3, backoff_initial_ms=100, backoff_max_ms=1000, schedule_seconds=[]
)


def ceiling(attempt: int, retry: RetryConfig = RETRY) -> float:
    return min(retry.backoff_max_ms, retry.backoff_initial_ms * 2.0 ** (attempt - 1)) / 1000


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    outcome = from_response(status, None, "ok")
    assert outcome.ok
    assert outcome.kind is Kind.DELIVERED
    assert outcome.status == status


@pytest.mark.parametrize("status", [301, 302, 304, 307, 400, 401, 403, 404, 410, 422])
def test_redirects_and_client_errors_are_permanent(status: int) -> None:
    outcome = from_response(status, "10", "nope")
    assert not outcome.ok
    assert not outcome.retryable
    assert (outcome.kind, outcome.status, outcome.message) == (Kind.HTTP_STATUS, status, "nope")


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_throttling_and_server_errors_are_retryable(status: int) -> None:
    outcome = from_response(status, None, "")
    assert not outcome.ok
    assert outcome.retryable
    assert outcome.kind is Kind.HTTP_STATUS


def test_retry_after_is_read_from_retryable_answers() -> None:
    assert from_response(429, "120", "").retry_after == 120
    assert from_response(503, None, "").retry_after is None


NOW = datetime(2026, 11, 11, 0, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (format_datetime(datetime(2026, 11, 11, 0, 2, 0, tzinfo=UTC), usegmt=True), 120.0),
        ("Wed, 11 Nov 2026 00:00:30 GMT", 30.0),
        ("Tue, 10 Nov 2026 23:00:00 GMT", 0.0),  # already past: retry now, never negative
    ],
)
def test_parse_retry_after(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5e3", "Wed, 99 Foo 2026"])
def test_unreadable_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW) is None


def test_unicode_digit_retry_after_is_none() -> None:
    assert parse_retry_after("²") is None


def rng() -> random.Random:
    return random.Random(20261111)


SERVER_ERROR = Outcome(Kind.HTTP_STATUS, retryable=True, status=503)


@pytest.mark.parametrize("attempts", [1, 2])
def test_retryable_retries_soon_within_the_backoff_ceiling(attempts: int) -> None:
    decision = decide(SERVER_ERROR, attempts, 0, 0.0, RETRY, rng())
    assert isinstance(decision, RetrySoon)
    assert 0 <= decision.delay <= ceiling(attempts)


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(Kind.TIMEOUT, retryable=True),
        Outcome(Kind.CONNECTION, retryable=True),
        from_response(429, None, ""),
    ],
)
def test_timeouts_connection_errors_and_throttling_are_retried(outcome: Outcome) -> None:
    assert isinstance(decide(outcome, 1, 0, 0.0, RETRY, rng()), RetrySoon)


def test_gives_up_after_quick_attempts_when_no_schedule() -> None:
    given_up = GiveUp(SERVER_ERROR, Limit.SCHEDULE)
    assert decide(SERVER_ERROR, 3, 0, 0.0, RETRY, rng()) == given_up
    assert decide(SERVER_ERROR, 4, 0, 0.0, RETRY, rng()) == given_up


def test_permanent_failure_gives_up_at_once() -> None:
    outcome = from_response(400, None, "bad request")
    assert decide(outcome, 1, 0, 0.0, RETRY, rng()) == GiveUp(outcome)


def test_delivered_is_done() -> None:
    assert decide(from_response(204, None, ""), 1, 0, 0.0, RETRY, rng()) == Done()


def test_single_quick_attempt_never_retries_in_process() -> None:
    retry = RETRY.model_copy(update={"quick_attempts": 1})
    assert isinstance(decide(SERVER_ERROR, 1, 0, 0.0, retry, rng()), GiveUp)


def test_retry_after_below_the_bound_is_honoured() -> None:
    outcome = Outcome(Kind.HTTP_STATUS, retryable=True, status=429, retry_after=5)
    decision = decide(outcome, 1, 0, 0.0, RETRY, rng())
    assert isinstance(decision, RetrySoon)
    assert 5 <= decision.delay <= 5 + ceiling(1)


def test_retry_after_beyond_the_in_process_bound_goes_to_the_delay_path() -> None:
    # Never earlier than asked: a long wish skips the quick attempts instead of being cut.
    retry = RETRY.model_copy(update={"retry_after_max_seconds": 30, "schedule_seconds": [5, 60]})
    outcome = Outcome(Kind.HTTP_STATUS, retryable=True, status=503, retry_after=45)
    assert decide(outcome, 1, 0, 0.0, retry, rng()) == Delay(45.0)


def test_retry_after_beyond_the_bound_with_no_schedule_dead_letters() -> None:
    retry = RETRY.model_copy(update={"retry_after_max_seconds": 30})
    outcome = Outcome(Kind.HTTP_STATUS, retryable=True, status=503, retry_after=86400)
    assert decide(outcome, 1, 0, 0.0, retry, rng()) == GiveUp(outcome, Limit.SCHEDULE)


SCHEDULE = RETRY.model_copy(update={"schedule_seconds": [5.0, 300.0, 1800.0]})
QUICK = SCHEDULE.quick_attempts


@pytest.mark.parametrize("attempts", range(1, QUICK))
def test_quick_attempts_come_before_the_schedule(attempts: int) -> None:
    assert isinstance(decide(SERVER_ERROR, attempts, 0, 0.0, SCHEDULE, rng()), RetrySoon)


def test_retryable_failure_moves_to_the_delay_schedule_after_quick_attempts() -> None:
    assert decide(SERVER_ERROR, QUICK, 0, 0.0, SCHEDULE, rng()) == Delay(5.0, Wait.RETRY)


@pytest.mark.parametrize("rounds", [0, 1, 2])
def test_each_round_waits_for_its_step_of_the_schedule(rounds: int) -> None:
    step = SCHEDULE.schedule_seconds[rounds]
    decision = decide(SERVER_ERROR, QUICK + rounds, rounds, 0.0, SCHEDULE, rng())
    assert decision == Delay(step)
    assert decision.uses_round


def test_gives_up_once_every_step_of_the_schedule_is_used() -> None:
    rounds = len(SCHEDULE.schedule_seconds)
    decision = decide(SERVER_ERROR, QUICK + rounds, rounds, 0.0, SCHEDULE, rng())
    assert decision == GiveUp(SERVER_ERROR, Limit.SCHEDULE)


def test_a_redelivered_delivery_gets_one_attempt_per_round() -> None:
    # Back from the delay path with attempts to spare: no new quick attempts in-process.
    assert decide(SERVER_ERROR, 1, 1, 0.0, SCHEDULE, rng()) == Delay(300.0)


def test_permanent_failure_on_the_schedule_still_gives_up_at_once() -> None:
    outcome = from_response(404, None, "not here")
    assert decide(outcome, QUICK + 1, 1, 0.0, SCHEDULE, rng()) == GiveUp(outcome)


@pytest.mark.parametrize(("attempts", "rounds"), [(1, 0), (QUICK + 1, 1)])
def test_gone_is_a_channel_disabled_letter_with_its_status(attempts: int, rounds: int) -> None:
    # 410 ends the delivery like any 4xx, but under the reason of the deliveries held back
    # after it: one `dlq replay --reason channel_disabled` sends them all.
    decision = decide(from_response(410, None, "bye"), attempts, rounds, 0.0, SCHEDULE, rng())
    assert decision == GiveUp(
        Outcome(
            Kind.CHANNEL_DISABLED,
            retryable=False,
            status=410,
            message="the receiver answered 410 Gone: bye",
        )
    )


def test_a_refused_delivery_names_no_status_it_never_got() -> None:
    assert refused("channel disabled by ops") == GiveUp(
        Outcome(Kind.CHANNEL_DISABLED, retryable=False, message="channel disabled by ops")
    )


def test_retry_after_pushes_the_delay_later() -> None:
    outcome = Outcome(Kind.HTTP_STATUS, retryable=True, status=503, retry_after=60)
    assert decide(outcome, QUICK, 0, 0.0, SCHEDULE, rng()) == Delay(60.0)


def test_retry_after_never_pulls_the_delay_earlier() -> None:
    outcome = Outcome(Kind.HTTP_STATUS, retryable=True, status=503, retry_after=1)
    assert decide(outcome, QUICK + 1, 1, 0.0, SCHEDULE, rng()) == Delay(300.0)


def test_throttling_waits_without_using_a_round() -> None:
    """A 429 says the receiver is up and wants less: the delivery waits as long as asked (at
    least its current step), and stays at its place in the schedule."""
    asked = Outcome(Kind.HTTP_STATUS, retryable=True, status=429, retry_after=600)
    decision = decide(asked, QUICK, 1, 0.0, SCHEDULE, rng())
    assert decision == Delay(600.0, Wait.THROTTLED)
    assert isinstance(decision, Delay)
    assert not decision.uses_round
    bare = from_response(429, None, "slow down")
    assert decide(bare, QUICK + 5, 3, 0.0, SCHEDULE, rng()) == Delay(1800.0, Wait.THROTTLED)


def test_throttling_past_the_maximum_age_gives_up() -> None:
    bare = from_response(429, None, "slow down")
    decision = decide(bare, QUICK, 0, SCHEDULE.max_age, SCHEDULE, rng())
    assert isinstance(decision, GiveUp)
    assert decision.limit is Limit.MAX_AGE
    assert decision.reason.kind is Kind.MAX_AGE
    assert decision.reason.status == 429


def test_a_delivery_older_than_its_maximum_age_is_dead_lettered_with_its_last_error() -> None:
    retry = SCHEDULE.model_copy(update={"max_age_seconds": 100})
    assert isinstance(decide(SERVER_ERROR, QUICK, 0, 99.0, retry, rng()), Delay)
    decision = decide(SERVER_ERROR, QUICK, 0, 100.0, retry, rng())
    assert isinstance(decision, GiveUp)
    assert decision.limit is Limit.MAX_AGE
    assert (decision.reason.kind, decision.reason.status) == (Kind.MAX_AGE, 503)
    assert "http_status 503" in decision.reason.message


def test_the_default_maximum_age_covers_the_schedule_with_a_margin() -> None:
    assert SCHEDULE.max_age == sum(SCHEDULE.schedule_seconds) + 600
    long = RetryConfig()  # Svix's schedule, about 28 hours
    total = sum(long.schedule_seconds)
    assert long.max_age == total * 1.25


@pytest.mark.parametrize("why", [Wait.CIRCUIT_OPEN, Wait.PARKED])
def test_waiting_uses_no_round_until_the_maximum_age(why: Wait) -> None:
    decision = wait_or_expire(30.0, why, 10.0, SERVER_ERROR, SCHEDULE)
    assert decision == Delay(30.0, why)
    assert not decision.uses_round
    expired = wait_or_expire(30.0, why, SCHEDULE.max_age, SERVER_ERROR, SCHEDULE)
    assert isinstance(expired, GiveUp)
    assert expired.limit is Limit.MAX_AGE
    assert expired.reason.status == 503  # the receiver's own last answer, not the wait


def test_a_delivery_that_never_got_an_answer_expires_naming_why_it_waited() -> None:
    expired = wait_or_expire(30.0, Wait.PARKED, SCHEDULE.max_age, None, SCHEDULE)
    assert isinstance(expired, GiveUp)
    assert "parked" in expired.reason.message


@given(attempt=st.integers(min_value=1, max_value=64), seed=st.integers())
def test_backoff_is_bounded_by_the_exponential_ceiling(attempt: int, seed: int) -> None:
    assert 0 <= backoff(attempt, RETRY, random.Random(seed)) <= ceiling(attempt)


def test_backoff_is_jittered_not_synchronised() -> None:
    generator = rng()
    delays = [backoff(4, RETRY, generator) for _ in range(200)]
    assert max(delays) - min(delays) > ceiling(4) / 2
