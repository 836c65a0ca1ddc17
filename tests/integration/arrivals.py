"""A receiver for ordered channels: verifies every signature over the raw body, refuses (503)
for a scripted while, and keeps per channel the timeline of what arrived and what it answered
2xx; and the rule that timeline must keep for a channel with `ordering: per_user`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from tests.support.servers import HookReceiver, signed

ARRIVED, ANSWERED = "arrived", "answered"  # what a timeline entry says of a delivery id


@dataclass(slots=True)
class Timeline:
    """One channel's requests in the order they happened at the receiver: (ARRIVED, id) when
    a request comes in, (ANSWERED, id) when it is answered 2xx."""

    entries: list[tuple[str, str]] = field(default_factory=list)
    answered: dict[str, int] = field(default_factory=dict)  # delivery id -> 2xx answers

    @property
    def duplicates(self) -> int:
        return sum(self.answered.values()) - len(self.answered)


def order_violations(
    entries: Iterable[tuple[str, str]], users: Sequence[Sequence[str]]
) -> list[str]:
    """What "in order" means at the receiver, per user: `users` lists each user's delivery ids
    in input order. A request for a delivery that was not answered 2xx before may arrive only
    once every earlier delivery of its user was answered 2xx. So a later event never arrives
    while an earlier one is being retried, and never while an earlier one is still in flight
    (one at a time). A request for a delivery already answered 2xx is a duplicate: receivers
    drop it by `X-gio-delivery-id`, so it is not an order violation, wherever it comes."""
    place = {
        delivery: (user, i) for user, ids in enumerate(users) for i, delivery in enumerate(ids)
    }
    done_up_to = [0] * len(users)  # per user: every delivery before this index answered 2xx
    answered: set[str] = set()
    violations = []
    for kind, delivery in entries:
        if delivery not in place:
            continue  # not a delivery of these users
        user, i = place[delivery]
        if kind == ANSWERED:
            answered.add(delivery)
            ids = users[user]
            while done_up_to[user] < len(ids) and ids[done_up_to[user]] in answered:
                done_up_to[user] += 1
        elif delivery not in answered and i > done_up_to[user]:
            violations.append(
                f"user {user}: #{i} arrived while #{done_up_to[user]} was not answered 2xx"
            )
    return violations


class ArrivalReceiver(HookReceiver):
    """Lean, like the fault suite's other receiver: it shares the test process and must not
    be what limits the replicas. `wait_for` checks again after every request."""

    def __init__(self, secrets: Mapping[str, str], hold_seconds: float = 0.01) -> None:
        super().__init__()
        self.secrets = dict(secrets)  # channel (last path segment) -> X-gio-signature key
        # Each request is answered this much after it arrived, so that two requests of one
        # user in flight at once show in the timeline as an arrival before an answer.
        self.hold_seconds = hold_seconds
        self.timelines: dict[str, Timeline] = {}
        self.requests = 0
        self.refused = 0  # answered 503 while failing
        self.unverified = 0
        self.failing_since: float | None = None
        self._failing_until = 0.0

    def timeline(self, channel: str) -> Timeline:
        return self.timelines.setdefault(channel, Timeline())

    def fail_for(self, seconds: float) -> None:
        """Answer every request 503 from now on, for this long."""
        self.failing_since = time.monotonic()
        self._failing_until = self.failing_since + seconds

    @property
    def failing(self) -> bool:
        return time.monotonic() < self._failing_until

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()  # the exact bytes sent: what the signature covers
        self.requests += 1
        channel = request.match_info["channel"]
        if not signed(raw, request, self.secrets[channel]):
            self.unverified += 1
            return web.Response(status=401)
        delivery = request.headers["X-gio-delivery-id"]
        timeline = self.timeline(channel)
        timeline.entries.append((ARRIVED, delivery))
        refuse = self.failing
        # A request whose sender was killed meanwhile is still answered (and counted), as a
        # receiver that does its work before answering would.
        await asyncio.sleep(self.hold_seconds)  # the scripted handling time, not a wait
        self.arrived()
        if refuse:
            self.refused += 1
            return web.Response(status=503, text="down for a while")
        timeline.entries.append((ANSWERED, delivery))
        timeline.answered[delivery] = timeline.answered.get(delivery, 0) + 1
        return web.Response(text="ok")
