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
    wait_or_expire,
)
from .ratelimit import RateLimiter, limiter_for

_TICK_SECONDS = 0.25
# A tick this much late means the event loop itself is the bottleneck: then a queue that waits
# says nothing about the receiver, and parking would only add work to a busy process.
_CONGESTED_SECONDS = _TICK_SECONDS * 1.2
_MIN_PARK_SECONDS = 1.0
_PARK_GROWTH = 1.5  # the shortest park grows this much with each park of the same delivery


class Transport(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...


class Throughput:
    """Deliveries per second the lane sustains, learned only while it was saturated (work
    waiting the whole tick), so an idle lane never looks slow. None until first measured:
    a lane parks nothing before it has evidence, except that a rate limit is known up front.

    `best` remembers the best recent tick, fading slowly: a lane slowed by a passing stall of
    the whole process (not by its receiver) is paced by what it showed it can do."""

    _FADE = 0.98  # per tick: the best rate of a minute ago counts for little

    def __init__(self, ceiling: float | None) -> None:
        self._ceiling = ceiling
        self.per_second: float | None = ceiling
        self.best = ceiling or 0.0
        self._completed = 0

    def completed(self) -> None:
        self._completed += 1

    def tick(self, seconds: float, saturated: bool) -> None:
        observed, self._completed = self._completed / seconds, 0
        self.best = self._capped(max(observed, self.best * self._FADE))
        previous = self.per_second
        if not saturated:
            # Work ran out before the lane did: it can do at least this much. This is what lets
            # a recovered receiver earn its capacity back.
            if previous is not None and observed > previous:
                self.per_second = self._capped(observed)
            return
        self.per_second = self._capped(
            observed if previous is None else 0.7 * previous + 0.3 * observed
        )

    def skip(self) -> None:
        """A tick the receiver paused us for says nothing about what it sustains."""
        self._completed = 0

    def pacing(self, fallback: float) -> float:
        """The rate to book parked work at: the limit when there is one, else the better of
        what the lane does now and what it did lately."""
        if self._ceiling is not None:
            return self._ceiling
        return max(self.per_second or 0.0, self.best) or fallback

    def _capped(self, rate: float) -> float:
        return rate if self._ceiling is None else min(rate, self._ceiling)


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
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self._transport = transport
        self._dead_letters = dead_letters
        self._delays = delays
        self._retry = retry
        self._observer = observer
        self._rng = rng or random.Random()
        self._clock = clock
        self._limiter = limiter or limiter_for(channel)
        self._gate = gate  # a cap beyond this lane's workers (the fleet's), else a no-op
        rate = channel.rate_limit.per_second if channel.rate_limit is not None else None
        self.throughput = Throughput(rate)
        self.breaker = breaker or local_breaker(
            channel, retry.circuit_breaker, self._circuit_changed
        )
        self._queue: deque[tuple[float, Delivery]] = deque()  # (enqueued at, delivery)
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for work
        # id(delivery) -> its retry timer and the delivery, which waits in no queue meanwhile
        self._timers: dict[int, tuple[asyncio.TimerHandle, Delivery]] = {}
        self._surplus_workers = 0  # workers to let go after a smaller max_concurrency
        self._tasks: list[asyncio.Task[None]] = []
        self._work_arrived = asyncio.Event()  # wakes the watcher of an idle lane
        self._booked_until = 0.0  # when the lane will have sent what is queued and parked
        self._throttled = 0  # 429s in a row
        self._congested = False  # the process's event loop ran late at the last tick
        self._no_requests = asyncio.Event()  # set while no request is out
        self.in_flight = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"lane:{self.channel.name}:{i}")
            for i in range(self.channel.max_concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._watch(), name=f"lane:{self.channel.name}"))

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def capacity(self) -> int:
        """How many queued deliveries the lane can send within the backlog bound, at the
        better of its current and its recent rate: a lane slowed by a busy process (not by
        its receiver) should not shed work that the process would then have to read again."""
        if self.throughput.per_second is None:
            return sys.maxsize
        rate = max(self.throughput.per_second, self.throughput.best)
        return max(self.channel.max_concurrency, int(self._retry.max_backlog_seconds * rate))

    def _behind(self) -> bool:
        """The oldest queued delivery has waited longer than the backlog bound."""
        bound = self._retry.max_backlog_seconds
        return bool(self._queue) and self._clock() - self._queue[0][0] > bound

    def _overloaded(self) -> bool:
        """More work than the lane can send within the bound. A receiver's pause or a rate
        limit makes that known up front; otherwise only a lane already behind counts, so a
        healthy lane absorbing a burst (or still warming up its connections) parks nothing."""
        if self._limiter.free_in() > self._retry.max_backlog_seconds:
            return True
        if len(self._queue) < self.capacity():
            return False
        return self.channel.rate_limit is not None or (self._behind() and not self._congested)

    def submit(self, delivery: Delivery) -> None:
        if delivery.orphaned():
            self._drop(delivery)
            return
        blocked = self.breaker.blocked_for()
        if blocked is not None:
            self._wait_for_probe(delivery, blocked)
        elif delivery.parks < self._retry.max_parks and self._overloaded():
            self._park(delivery)
        else:
            self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
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
        while not self._let_go():
            delivery = await self._next()
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
            self._drop(delivery)
            return
        delivery.channel = self.channel  # queued before a reload: sent as configured now
        if not await self.breaker.admit():
            cooldown = self._retry.circuit_breaker.cooldown_seconds
            self._wait_for_probe(delivery, self.breaker.blocked_for() or cooldown)
            return
        waited = await self._limiter.acquire()
        lease = await self._gate.acquire()
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
        self.throughput.completed()
        self._learn(outcome)
        if not outcome.ok:
            delivery.last_error = outcome
        self._observer.emit(Attempted(delivery, outcome, self._clock() - started, waited))
        age = now - delivery.created_at
        self._apply(
            delivery,
            decide(outcome, delivery.attempts, delivery.rounds, age, self._retry, self._rng),
        )

    def _learn(self, outcome: Outcome) -> None:
        """What an answer says about the receiver, for every delivery of the lane: 5xx,
        timeouts and connection errors count towards opening the circuit; 429 and Retry-After
        slow the whole lane down instead."""
        throttled = outcome.status == 429
        self.breaker.record(failure=outcome.retryable and not throttled)
        if throttled or outcome.retry_after is not None:
            self._throttled += throttled
            pause = outcome.retry_after
            if pause is None:  # a bare 429: back off further with each one in a row
                pause = (
                    min(
                        self._retry.backoff_max_ms,
                        self._retry.backoff_initial_ms * 2 ** (self._throttled - 1),
                    )
                    / 1000
                )
            self._limiter.pause(min(pause, self._retry.max_age))
        elif outcome.ok:
            self._throttled = 0

    def hold_for(self) -> float | None:
        """How long a delivery arriving now waits for the circuit's next probe; None when it
        may be sent (closed, or the probe is due: workers hold arrivals during a probe)."""
        blocked = self.breaker.blocked_for()
        return None if blocked is None else self._probe_wait(blocked)

    def _probe_wait(self, blocked: float) -> float:
        # Come back just after the probe goes out, spread a little so a crowd does not land
        # at once.
        return blocked + self._rng.uniform(0.05, 0.05 + blocked / 10)

    def _wait_for_probe(self, delivery: Delivery, blocked: float) -> None:
        self._wait(delivery, self._probe_wait(blocked), Wait.CIRCUIT_OPEN)

    def _park(self, delivery: Delivery) -> None:
        """Book the delivery a place behind what is queued and parked already, and have it
        come back while half a backlog is still ahead of it, so the lane never runs dry and
        rarely has to park it twice."""
        rate = self.throughput.pacing(fallback=float(self.channel.max_concurrency))
        rate = min(rate, self._limiter.share() or rate)  # a fleet-wide limit is shared
        now = self._clock()
        ready = now + max(len(self._queue) / rate, self._limiter.free_in())
        slot = max(self._booked_until, ready)
        self._booked_until = slot + 1 / rate
        wait = slot - now - self._retry.max_backlog_seconds / 2
        # Only the shortest park grows with each park: the booking already says when there is
        # room, and stretching it would bring the delivery back long after the lane ran dry.
        shortest = _MIN_PARK_SECONDS * _PARK_GROWTH**delivery.parks
        self._wait(delivery, max(wait, shortest), Wait.PARKED)

    def _wait(self, delivery: Delivery, seconds: float, why: Wait) -> None:
        age = time.time() - delivery.created_at
        self._apply(delivery, wait_or_expire(seconds, why, age, delivery.last_error, self._retry))

    def _apply(self, delivery: Delivery, decision: Decision) -> None:
        match decision:
            case Done():
                self._observer.emit(Delivered(delivery))
                delivery.finish()
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
                self._delays.submit(delivery, seconds, delivery.finish)
            case GiveUp(reason, limit):
                self._observer.emit(GaveUp(self.channel.name, delivery, reason, limit))
                letter = for_delivery(delivery, reason, None if limit is None else limit.value)
                self._dead_letters.submit(letter, delivery.finish)

    def _requeue(self, delivery: Delivery) -> None:
        self._timers.pop(id(delivery), None)
        if delivery.orphaned():
            self._drop(delivery)
        else:
            self._enqueue(delivery)

    def _drop(self, delivery: Delivery) -> None:
        self._observer.emit(Dropped(delivery))

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
                self._limiter, self._gate = limits.limiter, limits.gate
            else:
                self._limiter = limiter_for(channel)
            rate = channel.rate_limit.per_second if channel.rate_limit is not None else None
            self.throughput = Throughput(rate)
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
            self._congested = elapsed > _CONGESTED_SECONDS
            if self._congested or self._limiter.paused_for() > 0:
                self.throughput.skip()  # says nothing about what the receiver sustains
            else:
                self.throughput.tick(elapsed, saturated_before and bool(self._queue))
            self._shed()
            self._observer.emit(LaneLoad(name, len(self._queue), self.in_flight))

    def _shed(self) -> None:
        """Park the newest queued work while the lane holds more than it can send in time."""
        while len(self._queue) > self.capacity() and self._overloaded():
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
