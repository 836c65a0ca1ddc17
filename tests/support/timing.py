"""Rates from time stamps: the busiest one-second window and the steady rate after a burst.

Give these the sender's own stamps (each webhook body's `timestamp`, see `sent_at`) or a clock
in another process where you can: arrival times on a loaded machine bunch up behind a stall of
the receiving loop, so a busiest second by arrival can exceed what was sent in any second.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any

# How late a send may run after its rate limiter's slot on a loaded 2-core machine shared with
# the broker, Redis and the receivers, as a share of a second: test_reload measured 5 to 16
# extra sends in a second at 100/s (the slot was 50 to 160 ms behind); 0.3 leaves room.
LATENESS = 0.3


def busiest_window(times: Sequence[float], width: float = 1.0) -> tuple[int, float]:
    """The most stamps in any window [t, t + width) that starts at a stamp, and its t."""
    ordered = sorted(times)
    best, began = 0, ordered[0] if ordered else 0.0
    for i, t in enumerate(ordered):
        count = bisect.bisect_left(ordered, t + width - 1e-9) - i
        if count > best:
            best, began = count, t
    return best, began


def busiest_second(times: Sequence[float]) -> int:
    """The most stamps within any one second."""
    return busiest_window(times)[0]


def steady_rate(times: Sequence[float], burst: int) -> float:
    """Stamps per second after the first `burst`, over the time they took."""
    ordered = sorted(times)
    return (len(ordered) - burst) / (ordered[-1] - ordered[burst - 1])


def sent_at(bodies: Iterable[dict[str, Any]]) -> list[float]:
    """The sender's own stamps: each webhook body's `timestamp` (ms since the epoch, taken by
    the sending process when it built the request), in seconds."""
    return [int(body["timestamp"]) / 1000 for body in bodies]


def most_in_a_second(rate: float, burst: int) -> int:
    """The most stamps a token bucket (`rate`/s after `burst`) lets into one second, as the
    sender stamps them: slots are 1/rate apart, each stamp up to LATENESS s behind its slot,
    and the stamps' whole milliseconds may pull one more in."""
    return math.ceil(rate * (1 + LATENESS)) + burst + 1
