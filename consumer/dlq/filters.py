"""Which dead letters a command means: the filters as typed, and as resolved to times."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from consumer.deadletter import DeadLetter

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when no zone is given) or an age like `30m`, `2h`, `7d`."""
    match = _RELATIVE.match(text.strip())
    if match:
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time or an age like 2h, got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Request:
    """A replay's filters exactly as typed: the same words name the same replay."""

    channel: str | None = None
    reason: str | None = None
    since: str | None = None
    until: str | None = None
    ignore_expiry: bool = False  # send letters past their freshness limit too

    def key(self) -> str:
        words: list[str | None] = [self.channel, self.reason, self.since, self.until]
        if self.ignore_expiry:  # another replay; without the flag, keys stay those of before
            words.append("--ignore-expiry")
        return hashlib.sha256(orjson.dumps(words)).hexdigest()[:16]

    def describe(self) -> str:
        given = {k: v for k, v in self.words().items() if v is not None}
        flag = " --ignore-expiry" if self.ignore_expiry else ""
        return (" ".join(f"--{k} {v}" for k, v in given.items()) + flag).strip() or "(all)"

    def words(self) -> dict[str, str | None]:
        return {
            "channel": self.channel,
            "reason": self.reason,
            "since": self.since,
            "until": self.until,
        }

    def resolve(self, now: datetime) -> Filters:
        """Raises ValueError for a time that cannot be read."""
        return Filters(
            channel=self.channel,
            reason=self.reason,
            since=parse_time(self.since, now) if self.since else None,
            until=parse_time(self.until, now) if self.until else None,
        )


@dataclass(frozen=True, slots=True)
class Filters:
    channel: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def match(self, letter: DeadLetter) -> bool:
        return (
            (self.channel is None or letter.channel == self.channel)
            and (self.reason is None or letter.reason.kind == self.reason)
            and (self.since is None or letter.dead_lettered_at >= self.since)
            and (self.until is None or letter.dead_lettered_at < self.until)
        )
