"""Whether Redis answers, told to the observer only when that changes.

One per process, shared by everything that talks to Redis: the attribute store reports each
round trip, the fleet-wide limits each fallback and recovery. Redis counts as available only
while every user's latest report was an answer, so the one `redis_available` gauge means
"every user of Redis gets answers" and does not flap between two users that disagree.
"""

from __future__ import annotations

from .observer import NO_OBSERVER, Observer, RedisChanged


class RedisHealth:
    __slots__ = ("_failing", "_known", "_observer")

    def __init__(self, observer: Observer = NO_OBSERVER) -> None:
        self._observer = observer
        self._failing: dict[str, str] = {}  # user -> its latest error
        self._known = False  # unknown until Redis was first asked

    @property
    def available(self) -> bool | None:
        return not self._failing if self._known else None

    def answered(self, user: str = "attributes") -> None:
        if self._known and user not in self._failing:
            return  # the hot path: nothing changes
        before = self.available
        self._known = True
        self._failing.pop(user, None)
        self._tell(before)

    def failed(self, error: str, user: str = "attributes") -> None:
        before = self.available
        self._known = True
        self._failing[user] = error[:300]
        self._tell(before)

    def _tell(self, before: bool | None) -> None:
        now = self.available
        if now != before:
            error = "" if now else next(iter(self._failing.values()))
            self._observer.emit(RedisChanged(bool(now), error))
