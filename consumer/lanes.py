"""A lane per channel: its queue, workers, rate limit and circuit breaker.

Lanes never wait on each other, and a lane never holds more work than it can send within
`retry.max_backlog_seconds`: the overflow is parked on the delay path, so a slow or dead
receiver cannot hold input offsets (and so the other channels) hostage.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import deque
from typing import Protocol

import structlog

from .breaker import CircuitBreaker
from .catalog import Channel
from .config import RetryConfig
from .deadletter import DeadLetterWriter, for_delivery
from .delaypath import DelayPath
from .delivery import Delivery
from .outcome import Decision, Delay, Done, GiveUp, Kind, Outcome, RetrySoon, decide, park
from .ratelimit import RateLimiter, TokenBucket, Unlimited

log = structlog.get_logger(__name__)

_TICK_SECONDS = 0.25


class Transport(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...


def limiter_for(channel: Channel) -> RateLimiter:
    if channel.rate_limit is None:
        return Unlimited()
    return TokenBucket(channel.rate_limit.per_second, channel.rate_limit.capacity)


class Throughput:
    """Deliveries per second the lane sustains, learned only while it was saturated (work
    waiting the whole tick), so an idle lane never looks slow. None until first measured:
    a lane parks nothing before it has evidence, except that a rate limit is known up front."""

    def __init__(self, ceiling: float | None) -> None:
        self._ceiling = ceiling
        self.per_second: float | None = ceiling
        self._completed = 0

    def completed(self) -> None:
        self._completed += 1

    def tick(self, seconds: float, saturated: bool) -> None:
        observed, self._completed = self._completed / seconds, 0
        previous = self.per_second
        if not saturated:
            # Work ran out before the lane did: it can do at least this much. This is what lets
            # a recovered receiver earn its capacity back.
            if previous is not None and observed > previous:
                self.per_second = (
                    observed if self._ceiling is None else min(observed, self._ceiling)
                )
            return
        self.per_second = self._capped(
            observed if previous is None else 0.7 * previous + 0.3 * observed
        )

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
        rng: random.Random | None = None,
    ) -> None:
        self.channel = channel
        self._transport = transport
        self._dead_letters = dead_letters
        self._delays = delays
        self._retry = retry
        self._rng = rng or random.Random()
        self._limiter = limiter_for(channel)
        rate = channel.rate_limit.per_second if channel.rate_limit is not None else None
        self.throughput = Throughput(rate)
        self.breaker = CircuitBreaker(
            channel.name, retry.circuit_breaker.failures, retry.circuit_breaker.cooldown_seconds
        )
        self._queue: deque[tuple[float, Delivery]] = deque()  # (enqueued at, delivery)
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for work
        self._timers: dict[int, asyncio.TimerHandle] = {}  # id(delivery) -> its retry timer
        self._tasks: list[asyncio.Task[None]] = []

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
        """How many queued deliveries the lane can send within the backlog bound."""
        rate = self.throughput.per_second
        if rate is None:
            return sys.maxsize
        return max(self.channel.max_concurrency, int(self._retry.max_backlog_seconds * rate))

    def _behind(self) -> bool:
        """The oldest queued delivery has waited longer than the backlog bound."""
        bound = self._retry.max_backlog_seconds
        return bool(self._queue) and time.monotonic() - self._queue[0][0] > bound

    def _overloaded(self) -> bool:
        """More queued than the lane can send within the bound. A rate limit makes that
        known up front; otherwise only a lane already behind counts, so a healthy lane
        absorbing a burst (or still warming up its connections) never parks anything."""
        if len(self._queue) < self.capacity():
            return False
        return self.channel.rate_limit is not None or self._behind()

    def submit(self, delivery: Delivery) -> None:
        if self.breaker.is_open():
            closed = Outcome(Kind.CIRCUIT_OPEN, retryable=True, message="circuit breaker open")
            self._apply(delivery, closed)
        elif self._overloaded():
            self._apply_decision(delivery, park(self._retry))
        else:
            self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        self._queue.append((time.monotonic(), delivery))
        while self._idle:  # wake one idle worker, synchronously and without a task
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def _next(self) -> Delivery:
        while not self._queue:
            waiter = asyncio.get_running_loop().create_future()
            self._idle.append(waiter)
            await waiter
        return self._queue.popleft()[1]

    async def _work(self) -> None:
        while True:
            await self._attempt(await self._next())

    async def _attempt(self, delivery: Delivery) -> None:
        if not self.breaker.allow():
            self._apply(
                delivery, Outcome(Kind.CIRCUIT_OPEN, retryable=True, message="circuit breaker open")
            )
            return
        await self._limiter.acquire()
        now = time.time()
        delivery.attempts += 1
        if delivery.first_attempt_at is None:
            delivery.first_attempt_at = now
        delivery.last_attempt_at = now
        try:
            outcome = await self._transport.send(delivery)
        except Exception as exc:  # a bug must cost a retry, never a stranded record
            log.exception("delivery.send_crashed", channel=self.channel.name)
            outcome = Outcome(Kind.INTERNAL_ERROR, retryable=True, message=repr(exc)[:500])
        self.throughput.completed()
        # Only failures that say the receiver is unwell count against it.
        self.breaker.record(success=outcome.ok or not outcome.retryable)
        self._apply(delivery, outcome)

    def _apply(self, delivery: Delivery, outcome: Outcome) -> None:
        decision = decide(outcome, delivery.attempts, delivery.rounds, self._retry, self._rng)
        if outcome.kind is Kind.CIRCUIT_OPEN and delivery.last_error is not None:
            # An open circuit says nothing new about the receiver: a dead letter keeps the
            # receiver's own last answer as its reason.
            if isinstance(decision, GiveUp):
                decision = GiveUp(delivery.last_error)
        elif not outcome.ok:
            delivery.last_error = outcome
        self._apply_decision(delivery, decision)

    def _apply_decision(self, delivery: Delivery, decision: Decision) -> None:
        match decision:
            case Done():
                delivery.finish()
            case RetrySoon(delay):
                # A timer, not a sleeping worker: the worker is free for other deliveries.
                loop = asyncio.get_running_loop()
                self._timers[id(delivery)] = loop.call_later(delay, self._requeue, delivery)
            case Delay() as delay:
                if delay.uses_round:
                    delivery.rounds += 1
                self._delays.submit(delivery, delay, delivery.finish)
            case GiveUp(reason):
                self._dead_letters.submit(for_delivery(delivery, reason), delivery.finish)

    def _requeue(self, delivery: Delivery) -> None:
        del self._timers[id(delivery)]
        self._enqueue(delivery)

    async def _watch(self) -> None:
        """Every tick: learn the throughput, and park what the lane cannot send in time."""
        loop = asyncio.get_running_loop()
        while True:
            saturated_before = bool(self._queue)
            started = loop.time()
            await asyncio.sleep(_TICK_SECONDS)
            saturated = saturated_before and bool(self._queue)
            self.throughput.tick(loop.time() - started, saturated)
            while len(self._queue) > self.capacity() and self._overloaded():
                self._apply_decision(self._queue.pop()[1], park(self._retry))  # newest first

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
