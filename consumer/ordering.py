"""`ordering: per_user`: one user's deliveries to a channel, one at a time, in input order.

Input records are keyed by user id, so one user's events share an input partition and their
offsets give their order: a delivery's place is (input partition, input offset), kept by its
sources through retries, delay topics and replays (`sequencer.place_of`).

Inside a process, the lane keeps a chain per user: the delivery being sent (queued, in
flight, or waiting on a retry timer) and the later ones behind it, in memory, lowest first.
When it ends (delivered, or its dead letter written), the next one goes, to the front of the
lane's queue (it is older than what arrived meanwhile). While all goes well that costs a dict
look-up per delivery and nothing on Kafka.

A delivery that leaves the process (a retry round, an open circuit, a full lane) takes the
deliveries behind it along to the same delay topic, keyed by user so they share a partition
and come back together, in order, behind it. Out of the process, the order is kept by the
ledger (`orderledger.py`): a fact per unfinished delivery of the user, written before the
delivery leaves, erased once it ended. Three rules hold for every user of the channel:

1. A delivery is sent only if no earlier delivery of its user is unfinished: none held here
   ahead of it, and no fact of an earlier one in the ledger.
2. Before any delivery leaves the process, every earlier one held here has a durable fact
   (the chain is *documented*). So wherever a later one turns up, the earlier ones show.
3. What cannot be sent goes to the delay path behind the earliest unfinished one (wait
   reason `behind`), rather than wait in memory: an input partition never holds a user's
   backlog for the hours a retry schedule lasts, and other users' records keep committing.
   A chain held in memory is bounded too: past what it can send within
   `retry.max_backlog_seconds`, or a tenth of `kafka.max_in_flight_per_partition`, later
   deliveries go behind it on the delay path.

At each fault:
- Retry in process: the chain waits in memory behind its head (rule 1).
- Delay topic, open circuit, parked: the head and its chain leave with facts; later arrivals
  see the facts and follow (rule 3); they come back with the head and wait behind it there.
- Dead letter: the end of a delivery like a 2xx; the next one goes once the letter is written.
- Restart or rebalance: what was held in memory was not committed, so its next owner reads it
  again, in order. What left the process has facts; the new owner of an input partition
  reads the ledger to its end before any record of the partition is handed on
  (`Listener.prepare`), and a returning delay record waits until this process's ledger has
  read as far as its writer had (`order-seen`).
- Crash after a delivery ended but before its fact was erased: its record is not finished
  until the erasure is durable, so it is redone; sent again, it is a duplicate (same
  delivery id), never a later event overtaking an earlier one.
"""

from __future__ import annotations

import time
from bisect import insort
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from .delaypath import DelayPath
from .delivery import Delivery
from .observer import NO_OBSERVER, Delayed, Observer
from .orderledger import ORDER_SEEN, Fact, OrderLedger, Seq
from .outcome import Wait
from .sequencer import end, place_of

_MIN_WAIT_SECONDS = 1.0  # the shortest wait behind an earlier delivery on the delay path
_SERVICE_SECONDS = 0.05  # a first guess of how long a delivery takes, until measured


def _position(entry: tuple[Seq, Delivery]) -> Seq:
    return entry[0]


@dataclass(slots=True)
class _Chain:
    """One user's deliveries held here: the one being sent, and those behind it."""

    active: Delivery
    seq: Seq
    since: float  # when `active` was let go, for the service time
    waiting: list[tuple[Seq, Delivery]] = field(default_factory=list)  # lowest first
    documented: bool = False  # every member has a fact (rule 2)

    def held(self) -> set[Seq]:
        return {self.seq, *(seq for seq, _ in self.waiting)}

    def members(self) -> list[tuple[Seq, Delivery]]:
        return [(self.seq, self.active), *self.waiting]


class UserOrder:
    """The sequencer of one `ordering: per_user` channel."""

    def __init__(
        self,
        channel: str,
        ledger: OrderLedger,
        delays: DelayPath,
        *,
        max_held: int = 200,
        backlog_seconds: float = 30.0,
        observer: Observer = NO_OBSERVER,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._ledger = ledger
        self._facts = ledger.channel(channel)  # user -> unfinished deliveries outside
        self._delays = delays
        self._max_held = max(1, max_held)
        self._backlog = backlog_seconds
        self._observer = observer
        self._wall = wall
        self._clock = clock
        self._chains: dict[str, _Chain] = {}
        self._service = _SERVICE_SECONDS  # how long a delivery takes, admitted to ended

    @property
    def held(self) -> int:
        """Deliveries waiting in memory behind an earlier one of their user."""
        return sum(len(chain.waiting) for chain in self._chains.values())

    def admit(self, delivery: Delivery) -> bool:
        place = place_of(delivery)
        if place is None:
            return True
        user, seq = place
        chain = self._chains.get(user)
        if chain is None and user not in self._facts:  # the usual case: nothing to wait for
            self._chains[user] = _Chain(delivery, seq, self._clock())
            return True
        earlier = self._earlier(user, seq, () if chain is None else chain.held())
        if chain is None:
            if earlier is None:
                self._chains[user] = _Chain(delivery, seq, self._clock())
                return True
            self._behind(user, [(seq, delivery)], earlier, 0)
            return False
        if earlier is not None or chain.documented or len(chain.waiting) >= self._hold_limit():
            self._document(user, chain)
            self._behind(user, [(seq, delivery)], earlier, 1 + len(chain.waiting))
            return False
        insort(chain.waiting, (seq, delivery), key=_position)
        return False

    def settled(self, delivery: Delivery) -> Delivery | None:
        place = place_of(delivery)
        if place is None:
            delivery.finish()
            return None
        user = place[0]
        if user in self._facts:
            end(self._ledger, self._channel, delivery, place)
        else:
            delivery.finish()  # the usual case: nothing of the user outside a process
        chain = self._chains.get(user)
        if chain is None:
            return None
        if chain.active is not delivery:
            _unhold(chain, delivery)
            return None
        spent = self._clock() - chain.since
        self._service += 0.1 * (min(spent, self._backlog) - self._service)
        if not chain.waiting:
            del self._chains[user]
            return None
        return self._next(user, chain)

    def delay(self, delivery: Delivery, seconds: float) -> None:
        place = place_of(delivery)
        if place is None:
            self._delays.submit(delivery, seconds, delivery.finish)
            return
        user, seq = place
        members = [(seq, delivery)]
        chain = self._chains.get(user)
        if chain is not None and chain.active is delivery:
            del self._chains[user]  # the chain leaves with its head, in its order
            members += chain.waiting
            for _, behind in chain.waiting:
                self._observer.emit(Delayed(behind, seconds, Wait.BEHIND))
        level = self._delays.level(seconds)
        self._out(user, members, int((self._wall() + min(seconds, level)) * 1000), level)

    def dropped(self, delivery: Delivery) -> Delivery | None:
        place = place_of(delivery)
        chain = None if place is None else self._chains.get(place[0])
        if place is None or chain is None:
            return None
        if chain.active is not delivery:
            _unhold(chain, delivery)
            return None
        return self._next(place[0], chain)

    def release_all(self) -> list[Delivery]:
        released = []
        for chain in self._chains.values():
            released += [delivery for _, delivery in chain.waiting]
            chain.waiting.clear()
        return released

    def _next(self, user: str, chain: _Chain) -> Delivery | None:
        """The active delivery ended or was dropped: the next one held, if it may go."""
        if not chain.waiting:
            del self._chains[user]
            return None
        seq, following = chain.waiting.pop(0)
        earlier = self._earlier(user, seq, {seq, *(s for s, _ in chain.waiting)})
        if earlier is None:
            chain.active, chain.seq, chain.since = following, seq, self._clock()
            return following
        # Something earlier is unfinished outside: the rest of the chain waits behind it.
        del self._chains[user]
        self._behind(user, [(seq, following), *chain.waiting], earlier, 0)
        return None

    def _earlier(self, user: str, seq: Seq, held: Collection[Seq]) -> tuple[Seq, Fact] | None:
        """The earliest unfinished delivery of the user before `seq` that is not held here."""
        facts = self._facts.get(user)
        if not facts:
            return None
        now_ms = self._wall() * 1000
        found: tuple[Seq, Fact] | None = None
        stale = []
        for other, fact in facts.items():
            if other >= seq or other in held:
                continue
            if self._ledger.stale(fact, now_ms):
                stale.append(other)
            elif found is None or other < found[0]:
                found = (other, fact)
        for other in stale:  # left by a process that died at the worst moment: let go
            self._ledger.erase(self._channel, user, other)
        return found

    def _document(self, user: str, chain: _Chain) -> None:
        """Rule 2: a fact for each delivery held here, before anything of the user leaves."""
        if chain.documented:
            return
        chain.documented = True
        known = self._facts.get(user, {})
        due_ms = int(self._wall() * 1000)
        for seq, delivery in chain.members():
            if seq not in known:
                self._ledger.record(self._channel, user, seq, _fact(delivery, due_ms, 0.0))

    def _behind(
        self,
        user: str,
        members: list[tuple[Seq, Delivery]],
        earlier: tuple[Seq, Fact] | None,
        held_ahead: int,
    ) -> None:
        """Send these to the delay path behind the earliest unfinished delivery. If that one
        went to a delay topic: to the same topic and partition (keyed by user), due when it
        is, so they come back to the replica that reads it, right behind it; should it be
        there already (due, or being sent), they wait behind it in that replica's memory.
        If it is held by a process instead: back after the time what is held ahead of them
        takes, at least a second, to look again."""
        now = self._wall()
        now_ms = int(now * 1000)
        ahead_ms = int(held_ahead * self._service * 1000)
        fact = None if earlier is None else earlier[1]
        if fact is not None and fact.level > 0:
            due_ms, level = max(fact.due_ms, now_ms) + ahead_ms, fact.level
        else:
            due_ms = now_ms + max(int(_MIN_WAIT_SECONDS * 1000), ahead_ms)
            level = self._delays.level(due_ms / 1000 - now)
        for _, delivery in members:
            self._observer.emit(Delayed(delivery, due_ms / 1000 - now, Wait.BEHIND))
        self._out(user, members, due_ms, level)

    def _out(
        self, user: str, members: list[tuple[Seq, Delivery]], due_ms: int, level: float
    ) -> None:
        """Facts first, then the delay records, in order, keyed by user, on one topic and all
        due at the same moment (rules 1 and 2): the first of them comes back first."""
        for seq, delivery in members:
            self._ledger.record(self._channel, user, seq, _fact(delivery, due_ms, level))
        key = user.encode()

        def written() -> None:
            headers = [(ORDER_SEEN, str(self._ledger.seen()).encode())]
            for _, delivery in members:
                self._delays.submit(
                    delivery, level, delivery.finish, key=key, headers=headers, due_ms=due_ms
                )

        self._ledger.after(self._channel, user, written)

    def _hold_limit(self) -> int:
        """As many as the chain sends within the backlog bound, at most `max_held`."""
        return max(1, min(self._max_held, int(self._backlog / max(self._service, 1e-3))))


def _fact(delivery: Delivery, due_ms: int, level: float) -> Fact:
    return Fact(due_ms, int(delivery.created_at * 1000), delivery.id, level)


def _unhold(chain: _Chain, delivery: Delivery) -> None:
    chain.waiting = [(seq, d) for seq, d in chain.waiting if d is not delivery]
