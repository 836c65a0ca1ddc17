"""What a failed Redis call says, sorted by who can fix it.

- `UNREACHABLE`: no answer in time, a refused or reset connection, a Redis still loading its
  data. It passes by itself: every channel falls back and a probe tries again within seconds.
- `MISCONFIGURED`: Redis answers, but refuses what the limits need (a Cluster node that
  redirects, a read-only replica, a user without the permissions, a wrong password, no memory
  left, scripting switched off). Only an operator fixes it: said once, loudly, with the fix,
  and probed rarely, so the limits never flap between Redis and the fallback.
- `KEY`: one channel's keys hold something the scripts cannot use (another program's value of
  another type under our prefix). Only that channel falls back; the others stay shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from consumer.secrets import redact

from .shared import FleetUnavailable


class Trouble(StrEnum):
    UNREACHABLE = "unreachable"  # passes by itself; probed within seconds
    MISCONFIGURED = "misconfigured"  # an operator must act; said once, probed rarely
    KEY = "key"  # one channel's keys only


@dataclass(frozen=True, slots=True)
class Diagnosis:
    trouble: Trouble
    kind: str  # a short name of the cause, the same for every error of that cause
    reason: str  # what Redis or the client said, without a password
    fix: str = ""  # what an operator does about it; empty for UNREACHABLE


class KeyTrouble(FleetUnavailable):
    """One channel's keys cannot be used; the channel falls back, the link stays up."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.reason)
        self.diagnosis = diagnosis


_CLUSTER = (
    "rate_limiter.url is a Redis Cluster node: the scripts need every key of a channel on "
    "one Redis. Use a standalone Redis (or a primary behind a proxy that does not redirect)."
)
_FIXES: tuple[tuple[type[RedisError], str, str], ...] = (
    (MasterDownError, "master_down", ""),  # a replica whose primary is away: it passes
    (ClusterDownError, "cluster", _CLUSTER),
    (ClusterCrossSlotError, "cluster", _CLUSTER),
    (AskError, "cluster", _CLUSTER),  # MovedError too
    (
        ReadOnlyError,
        "read_only",
        "rate_limiter.url points at a read-only replica: point it at the primary (or at an "
        "endpoint that follows failover).",
    ),
    (
        NoPermissionError,
        "no_permission",
        "the Redis user may not run what the limits need: allow EVALSHA, SCRIPT LOAD, BLPOP "
        "and the read and write commands on the keys under rate_limiter.key_prefix "
        "(ACL: ~<key_prefix>* +@read +@write +@scripting +blpop).",
    ),
    (
        AuthenticationWrongNumberOfArgsError,
        "authentication",
        "Redis refused the password: set rate_limiter.password_env or password_file to "
        "the right one (a user name goes in the URL).",
    ),
    (
        AuthorizationError,
        "authentication",
        "Redis refused the password: set rate_limiter.password_env or password_file to "
        "the right one (a user name goes in the URL).",
    ),
    (
        AuthenticationError,
        "authentication",
        "Redis wants a password, or another one: set rate_limiter.password_env or "
        "password_file (a user name goes in the URL).",
    ),
    (
        OutOfMemoryError,
        "out_of_memory",
        "Redis is at its maxmemory and refuses writes: raise maxmemory, or give the limits "
        "a Redis of their own.",
    ),
)
_TRANSIENT = (BusyLoadingError, TryAgainError, MasterDownError)
_SCRIPTS_OFF = (
    "this Redis does not run Lua scripts (EVALSHA refused): the limits need a Redis that does."
)


def diagnose(error: BaseException) -> Diagnosis:
    """Sort one failed call's error."""
    reason = f"{type(error).__name__}: {redact(str(error)) or '-'}"[:300]
    if isinstance(error, _TRANSIENT):
        return Diagnosis(Trouble.UNREACHABLE, "loading", reason)
    for kind, name, fix in _FIXES:
        if isinstance(error, kind):
            return Diagnosis(Trouble.MISCONFIGURED, name, reason, fix)
    if isinstance(error, ResponseError):
        text = str(error)
        code = getattr(error, "status_code", None) or text.split(" ", 1)[0]
        if code == "WRONGTYPE" or "user_script" in text:
            # A key of the channel holds another type, or a value a script cannot read.
            return Diagnosis(
                Trouble.KEY,
                "wrong_type",
                reason,
                "another program writes under rate_limiter.key_prefix: give the limits a prefix "
                "of their own, or delete the channel's keys (they hold only limits, and are "
                "rebuilt).",
            )
        if code == "BUSY":
            return Diagnosis(Trouble.UNREACHABLE, "busy", reason)  # another script runs long
        if "unknown command" in text.lower() or code == "NOSCRIPT":
            return Diagnosis(Trouble.MISCONFIGURED, "no_scripting", reason, _SCRIPTS_OFF)
        if code == "MISCONF":
            return Diagnosis(
                Trouble.MISCONFIGURED,
                "cannot_persist",
                reason,
                "Redis refuses writes because it cannot save its snapshot: fix its disk or "
                "stop-writes-on-bgsave-error.",
            )
        return Diagnosis(
            Trouble.MISCONFIGURED,
            "refused",
            reason,
            "Redis refused the limits' scripts: see the reason, and check that rate_limiter.url "
            "is a standalone Redis 6.2 or newer.",
        )
    return Diagnosis(Trouble.UNREACHABLE, "unreachable", reason)
