"""One redis_available for every user of Redis: down while any user's latest report failed."""

from __future__ import annotations

from consumer.observer import Observer, RedisChanged
from consumer.redis_health import RedisHealth


def _watched() -> tuple[RedisHealth, list[RedisChanged]]:
    seen: list[RedisChanged] = []
    health = RedisHealth(
        Observer([lambda e: seen.append(e) if isinstance(e, RedisChanged) else None])
    )
    return health, seen


def test_unknown_until_first_report_then_told_only_of_changes() -> None:
    health, seen = _watched()
    assert health.available is None
    for _ in range(3):
        health.answered()
    assert health.available is True
    assert seen == [RedisChanged(True, "")]


def test_one_failing_user_keeps_it_down_while_another_gets_answers() -> None:
    health, seen = _watched()
    health.answered("attributes")
    health.failed("ConnectionError: refused", "rate_limiter")
    for _ in range(3):  # the attribute store still gets answers (another Redis, say)
        health.answered("attributes")
    assert health.available is False
    health.answered("rate_limiter")
    assert health.available is True
    assert seen == [
        RedisChanged(True, ""),
        RedisChanged(False, "ConnectionError: refused"),
        RedisChanged(True, ""),
    ]
