"""A clock a test moves by hand, for the parts that take `clock=` (breakers, caches, health)."""

from __future__ import annotations


class ManualClock:
    """Reads `now`; the test moves it (`clock.now += 5` or `clock.advance(5)`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
