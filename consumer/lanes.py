"""A lane per channel: its queue, workers, rate limit and circuit breaker.

Lanes never wait on each other, and a lane never holds more work than it can send within
`retry.max_backlog_seconds`: the overflow is parked on the delay path, paced by what the lane
sustains, so a slow or dead receiver cannot hold input offsets (and so the other channels)
hostage.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .breaker import Breaker, State
from .catalog import Channel
from .channels import ChannelControl, ChannelState
from .concurrency import UNLIMITED, ConcurrencyGate
from .config import RetryConfig
from .deadletter import DeadLetterWriter, for_delivery
from .delaypath import DelayPath
from .delivery import Delivery
from .limits import ChannelPacing, local_breaker
from .observer import (
    NO_OBSERVER,
    Attempted,
    CircuitChanged,
    Delayed,
    Delivered,
    Dropped,
    GaveUp,
    LaneLoad,
    Observer,
    RetryingSoon,
)
from .outcome import (
    Decision,
    Delay,
    Done,
    GiveUp,
    Kind,
    Outcome,
    RetrySoon,
    Wait,
    decide,
    expired,
    refused,
    wait_or_expire,
)
from .pacer import Pacer
from .parking import Parking
from .ratelimit import RateLimiter, limiter_for
from .sequencer import Sequencer, Unordered

_TICK_SECONDS = 0.25
# A tick this much late means the event loop itself is the bottleneck: then a queue that waits
# says nothing about the receiver, and parking would only add work to a busy process.
_CONGESTED_SECONDS = _TICK_SECONDS * 1.2


class Transport(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...


class ChannelLane:
    def __init__(
        self,
        channel: Channel,
        transport: Transport,
        dead_letters: DeadLetterWriter,
        delays: DelayPath,
        retry: RetryConfig,
        *,
        observer: Observer = NO_OBSERVER,
        limiter: RateLimiter | None = None,
        breaker: Breaker | None = None,
        gate: ConcurrencyGate = UNLIMITED,
        control: ChannelControl | None = None,
        sequencer: Sequencer | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self._control = control or ChannelState()  # the deployment's: disabled channels
        self._disabled = self._control.disabled  # asked before every request: bound once
        self._transport = transport
        self._dead_letters = dead_letters
        self._delays = delays
        self._retry = retry
        self._observer = observer
        self._rng = rng or random.Random()
        self._clock = clock
        limiter = limiter or limiter_for(channel)
        # Which deliveries may go now (ordering per_user keeps each user's in input order).
        self._order = sequencer or Unordered(delays)
        self.parking = Parking(channel, limiter, retry, clock)
        breaker = breaker or local_breaker(channel, retry.circuit_breaker, self._circuit_changed)
        self.pacer = Pacer(channel.name, limiter, gate, breaker, self._control, retry, clock)
        self._queue: deque[tuple[float, Delivery]] = deque()  # (enqueued at, delivery)
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for work
        # id(delivery) -> its retry timer and the delivery, which waits in no queue meanwhile
        self._timers: dict[int, tuple[asyncio.TimerHandle, Delivery]] = {}
        self._surplus_workers = 0  # workers to let go after a smaller max_concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self._work_arrived = asyncio.Event()  # wakes the watcher of an idle lane
        self._no_requests = asyncio.Event()  # set while no request is out
        self.in_flight = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"lane:{self.channel.name}:{i}")
            for i in range(self.channel.max_concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._watch(), name=f"lane:{self.channel.name}"))

    @property
    def breaker(self) -> Breaker:
        return self.pacer.breaker

    @breaker.setter
    def breaker(self, breaker: Breaker) -> None:
        self.pacer.breaker = breaker

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def _overloaded(self) -> bool:
        oldest = self._queue[0][0] if self._queue else None
        return self.parking.overloaded(len(self._queue), oldest)

    def submit(self, delivery: Delivery) -> None:
        if delivery.orphaned():
            self._drop(delivery)
        elif self._order.admit(delivery):
            self._take(delivery)

    def _take(self, delivery: Delivery | None, *, released: bool = False) -> None:
        """Deliveries allowed to go (by their order): queued, or to the delay path while the
        circuit is open or the lane is full; dead-lettered when the channel is disabled or the
        delivery expired. A dropped one may let the next of its user go.
        `released`: it waited behind an earlier one of its user, so it is older than what
        arrived meanwhile and goes to the front of the queue."""
        while delivery is not None:
            if delivery.orphaned():
                delivery, released = self._drop(delivery), True
                continue
            if self._disabled(self.channel.name) is not None:
                self._refuse(delivery)  # the dead letter, once written, lets the next go
                return
            if self._expired(delivery):
                return
            blocked = self.breaker.blocked_for()
            if blocked is not None:
                self._wait_for_probe(delivery, blocked)
            elif delivery.parks < self._retry.max_parks and self._overloaded():
                self._park(delivery)
            else:
                self._enqueue(delivery, first=released)
            return

    def _enqueue(self, delivery: Delivery, first: bool = False) -> None:
        if first and self._queue:  # the queue's oldest wait stays what it was
            self._queue.appendleft((self._queue[0][0], delivery))
        else:
            self._queue.append((self._clock(), delivery))
        self._work_arrived.set()
        while self._idle:  # wake one idle worker, synchronously and without a task
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def _next(self) -> Delivery | None:
        """The next queued delivery; None when this worker is asked to leave."""
        while not self._queue:
            if self._surplus_workers > 0:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter
        return self._queue.popleft()[1]

    async def _work(self) -> None:
        queue = self._queue
        while not self._let_go():
            # A busy lane's next delivery is taken without a coroutine of its own.
            delivery = queue.popleft()[1] if queue else await self._next()
            if delivery is not None:
                await self._attempt(delivery)

    def _let_go(self) -> bool:
        """Whether this worker should end, between deliveries: max_concurrency went down."""
        if self._surplus_workers <= 0:
            return False
        self._surplus_workers -= 1
        return True

    async def _attempt(self, delivery: Delivery) -> None:
        if delivery.orphaned():
            self._take(self._drop(delivery), released=True)
            return
        if self._expired(delivery):
            return
        delivery.channel = self.channel  # queued before a reload: sent as configured now
        if self._disabled(self.channel.name) is not None:
            self._refuse(delivery)
            return
        # Most requests of a healthy lane wait for nothing: then nothing is awaited either.
        cleared = self.pacer.at_once() or await self.pacer.cleared()
        if cleared is None:  # the circuit is open, or opened while this request waited
            cooldown = self._retry.circuit_breaker.cooldown_seconds
            self._wait_for_probe(delivery, self.breaker.blocked_for() or cooldown)
            return
        waited, lease, admission = cleared
        if delivery.orphaned() and not admission.probe:
            # Revoked while it waited for a permit or a lease: its partition's next owner
            # sends it. (A probe goes: the circuit needs its answer.)
            lease.release()
            self._take(self._drop(delivery), released=True)
            return
        if self._disabled(self.channel.name) is not None:
            # Disabled while it waited: only requests already out reach the receiver.
            self._refuse(delivery)
            lease.release()
            if self.breaker.state is not State.CLOSED:
                await self.breaker.reset()  # release a probe it may hold: nothing is sent
            return
        now = time.time()
        delivery.attempts += 1
        if delivery.first_attempt_at is None:
            delivery.first_attempt_at = now
        delivery.last_attempt_at = now
        self.in_flight += 1
        self._no_requests.clear()
        started = self._clock()
        try:
            outcome = await self._transport.send(delivery)
        except Exception as exc:  # a bug must cost a retry, never a stranded record
            outcome = Outcome(Kind.INTERNAL_ERROR, retryable=True, message=repr(exc)[:500])
        finally:
            lease.release()
            self.in_flight -= 1
            if not self.in_flight:
                self._no_requests.set()
        self.parking.throughput.completed()
        self.pacer.learn(outcome, admission)
        if not outcome.ok:
            delivery.last_error = outcome
        self._observer.emit(Attempted(delivery, outcome, self._clock() - started, waited))
        age = now - delivery.created_at
        self._apply(
            delivery,
            decide(outcome, delivery.attempts, delivery.rounds, age, self._retry, self._rng),
        )

    def _expired(self, delivery: Delivery) -> bool:
        """Past its freshness limit: dead-lettered (`expired`) instead of sent or queued."""
        stale = expired(delivery.expires_at, time.time())
        if stale is not None:
            self._apply(delivery, stale)
        return stale is not None

    def hold_for(self) -> float | None:
        """How long a delivery arriving now waits for the circuit's next probe; None when it
        may be sent (closed, or the probe is due: workers hold arrivals during a probe)."""
        if self._disabled(self.channel.name) is not None:
            return None  # sent on to the lane, which dead-letters it at once
        blocked = self.breaker.blocked_for()
        return None if blocked is None else self._probe_wait(blocked)

    def _refuse(self, delivery: Delivery) -> None:
        """A disabled channel's delivery becomes a dead letter without a request."""
        disabled = self._disabled(self.channel.name)
        why = "channel disabled" if disabled is None else disabled.describe()
        self._apply(delivery, refused(why))

    def _probe_wait(self, blocked: float) -> float:
        # Come back just after the probe goes out, spread a little so a crowd does not land
        # at once.
        return blocked + self._rng.uniform(0.05, 0.05 + blocked / 10)

    def _wait_for_probe(self, delivery: Delivery, blocked: float) -> None:
        self._wait(delivery, self._probe_wait(blocked), Wait.CIRCUIT_OPEN)

    def _park(self, delivery: Delivery) -> None:
        seconds = self.parking.park_for(len(self._queue), delivery.parks)
        self._wait(delivery, seconds, Wait.PARKED)

    def _wait(self, delivery: Delivery, seconds: float, why: Wait) -> None:
        age = time.time() - delivery.created_at
        self._apply(delivery, wait_or_expire(seconds, why, age, delivery.last_error, self._retry))

    def _apply(self, delivery: Delivery, decision: Decision) -> None:
        match decision:
            case Done():
                self._observer.emit(Delivered(delivery))
                self._take(self._order.settled(delivery), released=True)
            case RetrySoon(delay):
                # A timer, not a sleeping worker: the worker is free for other deliveries.
                self._observer.emit(RetryingSoon(delivery, delay))
                loop = asyncio.get_running_loop()
                handle = loop.call_later(delay, self._requeue, delivery)
                self._timers[id(delivery)] = (handle, delivery)
            case Delay(seconds, why):
                if decision.uses_round:
                    delivery.rounds += 1
                elif why is Wait.PARKED:
                    delivery.parks += 1
                self._observer.emit(Delayed(delivery, seconds, why))
                self._order.delay(delivery, seconds)
            case GiveUp(reason, limit):
                self._observer.emit(GaveUp(self.channel.name, delivery, reason, limit))
                letter = for_delivery(delivery, reason, None if limit is None else limit.value)
                # The next delivery of its user (ordering per_user) goes once this is written.
                self._dead_letters.submit(
                    letter, lambda: self._take(self._order.settled(delivery), released=True)
                )

    def _requeue(self, delivery: Delivery) -> None:
        self._timers.pop(id(delivery), None)
        if delivery.orphaned():
            self._take(self._drop(delivery), released=True)
        else:
            self._enqueue(delivery)

    def _drop(self, delivery: Delivery) -> Delivery | None:
        """Not sent: its next owner redoes it. Returns the next of its user that may go."""
        self._observer.emit(Dropped(delivery))
        return self._order.dropped(delivery)

    def reset_circuit(self) -> None:
        """`channels reset-circuit`: close the circuit now (for the whole fleet where it is
        shared); runs beside the workers and ends with the lane."""
        self._tasks.append(
            asyncio.create_task(self.breaker.reset(), name=f"lane:{self.channel.name}:reset")
        )

    def _circuit_changed(self, state: State, failures: int, cooldown: float) -> None:
        self._observer.emit(CircuitChanged(self.channel.name, state.value, failures, cooldown))

    def reconfigure(self, channel: Channel, limits: ChannelPacing | None = None) -> None:
        """A reloaded config: deliveries queued, timer-held or coming back are sent to the
        channel as it is now configured (its URL, secret, timeout); a changed rate limit
        applies from the next request (`limits`: the new limiter and concurrency gate, from
        the same factory as at start); a different concurrency adds or lets go of workers."""
        old, self.channel = self.channel, channel
        if channel.rate_limit != old.rate_limit or channel.max_concurrency != old.max_concurrency:
            if limits is not None:
                self.pacer.retarget(limits.limiter, limits.gate)
            else:
                self.pacer.retarget(limiter_for(channel))
            self.parking.retarget(channel, self.pacer.limiter)
        more = channel.max_concurrency - old.max_concurrency
        if more > 0:
            self._surplus_workers = max(0, self._surplus_workers - more)
            self._tasks += [
                asyncio.create_task(self._work(), name=f"lane:{channel.name}:+{i}")
                for i in range(more)
            ]
        elif more < 0:
            self._surplus_workers -= more
            for waiter in list(self._idle):  # wake idle workers so they can leave now
                if not waiter.done():
                    waiter.set_result(None)

    async def retire(self, reason: Outcome, within: float) -> None:
        """The channel was removed from the config: nothing more is sent. Queued and
        timer-held deliveries become dead letters (replayable if the channel comes back);
        requests already out get `within` seconds to finish, then the lane stops."""
        self._surplus_workers = sys.maxsize
        pending = [d for _, d in self._queue] + [d for _, d in self._timers.values()]
        pending += self._order.release_all()  # held behind an earlier one of their user
        self._queue.clear()
        for handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for delivery in pending:
            self._apply(delivery, GiveUp(reason))
        if self.in_flight:  # requests in flight end by their own timeout, or at `within`
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_requests.wait(), within)
        await self.close()

    async def _watch(self) -> None:
        """While the lane has work, every tick: learn the throughput, park what the lane cannot
        send in time, and say how loaded it is. An idle lane costs no wake-ups (it says so
        once). A tick that ran late says the process is busy, not the receiver slow: it
        teaches nothing and parks nothing new."""
        loop = asyncio.get_running_loop()
        name = self.channel.name
        while True:
            if not self._queue and not self.in_flight:
                self._observer.emit(LaneLoad(name, 0, 0))
                self._work_arrived.clear()
                await self._work_arrived.wait()
            saturated_before = bool(self._queue)
            started = loop.time()
            await asyncio.sleep(_TICK_SECONDS)
            elapsed = loop.time() - started
            saturated = saturated_before and bool(self._queue)
            self.parking.tick(elapsed, saturated, congested=elapsed > _CONGESTED_SECONDS)
            self._shed()
            self._observer.emit(LaneLoad(name, len(self._queue), self.in_flight))

    def _shed(self) -> None:
        """Park the newest queued work while the lane holds more than it can send in time."""
        while len(self._queue) > self.parking.capacity() and self._overloaded():
            delivery = self._queue[-1][1]
            if delivery.parks >= self._retry.max_parks:
                return
            self._queue.pop()
            self._park(delivery)

    async def close(self) -> None:
        for handle, _ in self._timers.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
