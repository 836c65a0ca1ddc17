"""The order ledger: which deliveries of `ordering: per_user` channels wait outside a process.

A user's deliveries to such a channel go one at a time, in input order. Inside one process a
lane keeps that order in memory (`ordering.py`). Once one of them leaves the process (to a
delay topic, or waiting behind another one that did), a process anywhere may meet a later
delivery of the same user: the next event from the input, or a record coming back from a
delay topic. The ledger is how it learns that something earlier is still unfinished.

It is a compacted topic (`kafka.order_topic`, one partition, so it has one order), keyed by
(channel, user, input partition, input offset): a value says that delivery is unfinished and
when it is expected back; a tombstone says it reached its end (delivered or dead-lettered).
Every replica reads it from the beginning at start and follows it; its view here is a map
channel -> user -> {input position: fact}, updated at once by this process's own writes.

What keeps the view sufficient, and is relied on by `ordering.py`:
- A fact is durable before the delivery it names leaves its process (its delay record is
  written, its offset can be committed), and before any later delivery of the user does:
  writes of one user are sequenced, `after()` runs only once all of them are acknowledged.
- A delay record of an ordered delivery carries `order-seen`: how far into the ledger its
  writer had read or written. A reader acts on it only once its own view has read that far
  (`caught_up`), so it knows every fact its writer knew.
- A partition's new owner reads the ledger to its end before it hands on any record of the
  partition (the listener's `prepare`): a fact written by the previous owner was durable
  before that owner committed past it.
- A fact is erased only after its delivery ended, and the delivery's own record (input or
  delay) is finished only once the tombstone is durable: a crash in between redoes the
  delivery, which erases it again. A fact left behind by a process that died between writing
  a fact and its record is adopted by the redo of that record (same key).
The compaction lag of the topic (an hour) outlasts any healthy reader's lag, so a superseded
fact is never cleaned away before a reader that still needs it has passed it.

Facts older than `stale_after` (beyond any delivery's maximum age) are ignored: a last
resort against a fact left by a process that died at the worst moment, which would
otherwise hold its user back for ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .handoff import Handoff

Seq = tuple[int, int]  # (input partition, input offset): a user's records share a partition
Facts = dict[str, dict[Seq, "Fact"]]  # user -> their unfinished deliveries of one channel
ORDER_SEEN = "order-seen"  # delay-record header: how far into the ledger its writer had read


@dataclass(frozen=True, slots=True)
class Fact:
    """An unfinished delivery that later deliveries of its user must wait behind."""

    due_ms: int  # when it is expected back (now, for one still held by a process)
    created_ms: int  # when the delivery was made
    delivery_id: str  # for whoever reads the topic to see who waits for what
    level: float = 0.0  # the delay topic it waits on (its delay); 0 while held by a process


def fact_key(channel: str, user: str, seq: Seq) -> bytes:
    return orjson.dumps([channel, user, seq[0], seq[1]])


def parse_key(key: bytes | None) -> tuple[str, str, Seq] | None:
    """None for anything not written by us (the topic is ours, but a reader must not die
    of a stray record)."""
    try:
        channel, user, partition, offset = orjson.loads(key or b"")
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    fields_ok = isinstance(channel, str) and isinstance(user, str)
    if not fields_ok or not isinstance(partition, int) or not isinstance(offset, int):
        return None
    return channel, user, (partition, offset)


def encode_fact(fact: Fact) -> bytes:
    return orjson.dumps(
        {
            "due_ms": fact.due_ms,
            "created_ms": fact.created_ms,
            "delivery_id": fact.delivery_id,
            "level": fact.level,
        }
    )


def decode_fact(value: bytes) -> Fact | None:
    try:
        data = orjson.loads(value)
        return Fact(
            int(data["due_ms"]),
            int(data["created_ms"]),
            str(data["delivery_id"]),
            float(data.get("level", 0.0)),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class LedgerSink(Protocol):
    async def send(self, key: bytes, value: bytes | None) -> Awaitable[int]:
        """Queue the record; the result resolves to its offset once it is durable."""


class KafkaLedgerSink:
    def __init__(self, producer: Any, topic: str) -> None:
        self._producer = producer
        self._topic = topic

    async def send(self, key: bytes, value: bytes | None) -> Awaitable[int]:
        ack = await self._producer.send(self._topic, value, key=key, partition=0)
        return _offset_of(ack)


async def _offset_of(ack: Awaitable[Any]) -> int:
    return int((await ack).offset)


class MemoryLedgerSink:
    """For unit tests: the topic as a list, offsets its indexes; `replay_into` feeds another
    process's ledger as its follower would."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    async def send(self, key: bytes, value: bytes | None) -> Awaitable[int]:
        self.records.append((key, value))
        written: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        written.set_result(len(self.records) - 1)
        return written

    def replay_into(self, ledger: OrderLedger, start: int = 0) -> int:
        for offset in range(start, len(self.records)):
            ledger.apply(*self.records[offset], offset)
        return len(self.records)


@dataclass(slots=True)
class _Local:
    """This process's latest write of one key, which the follower must not undo with an
    older record; a record of another process read while ours was unacknowledged waits
    in `later`, and wins if it turns out to be the newer one."""

    unacked: int = 0
    offset: int = -1  # of our latest acknowledged write
    later: tuple[int, bytes | None] | None = None  # (offset, value) read meanwhile


class OrderLedger:
    def __init__(
        self, sink: LedgerSink, handoff: Handoff | None = None, stale_after: float = 86_400.0
    ) -> None:
        self._sink = sink
        self._handoff = handoff or Handoff("delay")
        self._stale_after_ms = stale_after * 1000
        self._channels: dict[str, Facts] = {}
        self._unacked: dict[tuple[str, str], int] = {}  # per (channel, user): writes in flight
        self._after: dict[tuple[str, str], list[Callable[[], None]]] = {}
        self._local: dict[bytes, _Local] = {}
        self._written_to = 0  # one past our highest acknowledged write
        self._read_to = 0  # one past the last record the follower applied

    def channel(self, name: str) -> Facts:
        """The live view of one channel's facts (the same dict for as long as the ledger
        lives: a lane keeps it and reads it directly)."""
        return self._channels.setdefault(name, {})

    def stale(self, fact: Fact, now_ms: float) -> bool:
        return now_ms - fact.created_ms > self._stale_after_ms

    def record(self, channel: str, user: str, seq: Seq, fact: Fact) -> None:
        """This delivery is unfinished; in the view at once, durable soon."""
        self.channel(channel).setdefault(user, {})[seq] = fact
        self._write(channel, user, fact_key(channel, user, seq), encode_fact(fact))

    def erase(
        self, channel: str, user: str, seq: Seq, then: Callable[[], None] | None = None
    ) -> None:
        """This delivery ended; out of the view at once, `then` once that is durable."""
        self._forget(channel, user, seq)
        self._write(channel, user, fact_key(channel, user, seq), None)
        if then is not None:
            self.after(channel, user, then)

    def after(self, channel: str, user: str, then: Callable[[], None]) -> None:
        """Run `then` once every write of this user's facts so far is durable (now, if
        none is in flight)."""
        key = (channel, user)
        if key in self._unacked:
            self._after.setdefault(key, []).append(then)
        else:
            then()

    def seen(self) -> int:
        """How far into the ledger this process has read or written: what a reader of a
        record written now must have read before acting on it."""
        return max(self._read_to, self._written_to)

    def caught_up(self, position: int) -> bool:
        return self._read_to >= position

    def apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        """A record the follower read, in topic order."""
        self._read_to = max(self._read_to, offset + 1)
        if key is None:
            return
        local = self._local.get(key)
        if local is not None:
            if local.unacked:
                local.later = (offset, value)  # decided when ours is acknowledged
                return
            if offset < local.offset:
                return  # our own write is newer: the view has it already
            del self._local[key]
        self._set(key, value)

    def _set(self, key: bytes, value: bytes | None) -> None:
        parsed = parse_key(key)
        if parsed is None:
            return
        channel, user, seq = parsed
        if value is None:
            self._forget(channel, user, seq)
            return
        fact = decode_fact(value)
        if fact is not None:  # else not ours: it neither holds anyone back nor lets go
            self.channel(channel).setdefault(user, {})[seq] = fact

    def read_to(self, position: int) -> None:
        """The follower's position when it read nothing (an empty or compacted stretch)."""
        self._read_to = max(self._read_to, position)

    def _forget(self, channel: str, user: str, seq: Seq) -> None:
        facts = self.channel(channel)
        mine = facts.get(user)
        if mine is not None:
            mine.pop(seq, None)
            if not mine:
                del facts[user]

    def _write(self, channel: str, user: str, key: bytes, value: bytes | None) -> None:
        owner = (channel, user)
        self._unacked[owner] = self._unacked.get(owner, 0) + 1
        local = self._local.setdefault(key, _Local())
        local.unacked += 1

        async def send() -> Awaitable[None]:
            return self._noted(key, await self._sink.send(key, value))

        self._handoff.submit(send, lambda: self._acked(owner))

    async def _noted(self, key: bytes, ack: Awaitable[int]) -> None:
        offset = await ack
        self._written_to = max(self._written_to, offset + 1)
        local = self._local.get(key)
        if local is None:
            return
        local.unacked -= 1
        local.offset = max(local.offset, offset)
        if local.unacked:
            return
        later, local.later = local.later, None
        if later is not None and later[0] > local.offset:
            self._set(key, later[1])  # another process wrote it after us
        if self._read_to > local.offset:
            del self._local[key]  # the follower is past our write already

    async def close(self) -> None:
        """Stop writing (the service closes the shared hand-off with the delay path)."""
        await self._handoff.close()

    def _acked(self, owner: tuple[str, str]) -> None:
        left = self._unacked[owner] - 1
        if left:
            self._unacked[owner] = left
            return
        del self._unacked[owner]
        for then in self._after.pop(owner, ()):
            then()
