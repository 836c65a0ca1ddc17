"""Whether Redis answers, told to the observer only when that changes.

One per process, shared by everything that talks to Redis: the attribute store reports each
round trip now; the fleet-wide rate limiter and circuit state are meant to report to the same
instance (`answered()` / `failed(error)`), so the one `redis_available` gauge means "every
user of Redis got answers".
"""

from __future__ import annotations

from .observer import NO_OBSERVER, Observer, RedisChanged


class RedisHealth:
    __slots__ = ("_available", "_observer")

    def __init__(self, observer: Observer = NO_OBSERVER) -> None:
        self._observer = observer
        self._available: bool | None = None  # unknown until Redis was first asked

    @property
    def available(self) -> bool | None:
        return self._available

    def answered(self) -> None:
        if self._available is not True:
            self._available = True
            self._observer.emit(RedisChanged(True, ""))

    def failed(self, error: str) -> None:
        if self._available is not False:
            self._available = False
            self._observer.emit(RedisChanged(False, error[:300]))
