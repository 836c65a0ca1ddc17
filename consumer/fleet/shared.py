"""What the fleet-wide limits share: whether Redis answers, how many replicas there are, and
where each channel's state lives.

The limiter, gate and breaker of this package never talk to Redis themselves: they call a
store (a Protocol, with a Redis implementation and in-memory fakes for tests) and fall back to
a per-replica share of the limit while `Availability.shared` is false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote


class FleetUnavailable(Exception):
    """The shared store did not answer in time (or refused); the caller falls back."""


class Availability(Protocol):
    @property
    def shared(self) -> bool:
        """The shared store answers: limits hold fleet-wide. False: each replica takes its share."""

    def replicas(self) -> int:
        """Live replicas of this deployment (at least 1): what a limit is divided by meanwhile."""

    async def until_shared(self) -> None:
        """Return once `shared` is true again (at once while it is)."""


def share(total: float, replicas: int) -> float:
    """One replica's part of a fleet-wide limit."""
    return total / max(1, replicas)


def group_key(prefix: str, group: str, what: str) -> str:
    """A key of the whole deployment (not of one channel), encoded as `ChannelKeys` are."""
    return f"{prefix}{{{quote(group, safe='')}}}:{what}"


@dataclass(frozen=True, slots=True)
class ChannelKeys:
    """Redis keys of one channel of one deployment (consumer group).

    The group id is part of every key, so two deployments on one Redis never share a limit.
    Group and channel are percent-encoded (":" and braces too), so no two pairs meet in one
    key, and the braces make them a hash tag: every key of a channel would sit in one slot of
    a Redis Cluster, as a script that touches several of them requires (the client here
    speaks to one Redis; the tag keeps that door open).
    """

    prefix: str
    group: str
    channel: str

    def _key(self, what: str) -> str:
        tag = f"{quote(self.group, safe='')}/{quote(self.channel, safe='')}"
        return f"{self.prefix}{{{tag}}}:{what}"

    @property
    def rate(self) -> str:
        return self._key("rate")  # GCRA: the theoretical arrival time of the next permit

    @property
    def pause(self) -> str:
        return self._key("pause")  # until when the receiver asked us to wait

    @property
    def leases(self) -> str:
        return self._key("leases")  # sorted set: holder -> expiry

    @property
    def freed(self) -> str:
        return self._key("freed")  # list: a token per lease given back, wakes one waiter

    @property
    def wanted(self) -> str:
        return self._key("wanted")  # set for a second by a take the cap refused

    @property
    def circuit(self) -> str:
        return self._key("circuit")  # hash: state, failures, cooldown, open_until, version

    @property
    def probe(self) -> str:
        return self._key("probe")  # set (NX, with expiry) by the one replica that probes
