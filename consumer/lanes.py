"""A lane per channel: its queue, workers, rate limit and circuit breaker.

Lanes never wait on each other, and a lane never holds more work than it can send within
`retry.max_backlog_seconds`: the overflow is parked on the delay path, so a slow or dead
receiver cannot hold input offsets (and so the other channels) hostage.
"""

from __future__ import annotations

import asyncio
import random
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
_COLD_RATE = 1000.0  # deliveries/s assumed before a channel has shown what it can take


class Transport(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...


def limiter_for(channel: Channel) -> RateLimiter:
    if channel.rate_limit is None:
        return Unlimited()
    return TokenBucket(channel.rate_limit.per_second, channel.rate_limit.capacity)


class Throughput:
    """Deliveries per second the lane sustains, learned only while it was saturated (busy
    the whole tick), so an idle lane never looks slow. Halves per saturated tick with no
    completions, so a receiver that stopped answering is noticed within a second or two."""

    def __init__(self, ceiling: float | None) -> None:
        self._ceiling = ceiling
        self.per_second = ceiling if ceiling is not None else _COLD_RATE
        self._completed = 0

    def completed(self) -> None:
        self._completed += 1

    def tick(self, seconds: float, saturated: bool) -> None:
        observed, self._completed = self._completed / seconds, 0
        if saturated:
            self.per_second = 0.5 * self.per_second + 0.5 * observed
        else:
            self.per_second = max(self.per_second, observed)
        if self._ceiling is not None:
            self.per_second = min(self.per_second, self._ceiling)


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
        self._queue: deque[Delivery] = deque()
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
        bound = self._retry.max_backlog_seconds * self.throughput.per_second
        return max(self.channel.max_concurrency, int(bound))

    def submit(self, delivery: Delivery) -> None:
        if not self.breaker.allow():
            closed = Outcome(Kind.CIRCUIT_OPEN, retryable=True, message="circuit breaker open")
            self._apply(delivery, closed)
        elif len(self._queue) >= self.capacity():
            self._apply_decision(delivery, park(self._retry))
        else:
            self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        self._queue.append(delivery)
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
        return self._queue.popleft()

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
        if not outcome.ok:
            delivery.last_error = outcome
        decision = decide(outcome, delivery.attempts, delivery.rounds, self._retry, self._rng)
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
                reason = (
                    delivery.last_error
                    if reason.kind is Kind.CIRCUIT_OPEN and delivery.last_error is not None
                    else reason
                )
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
            overflow = len(self._queue) - self.capacity()
            for _ in range(max(0, overflow)):
                self._apply_decision(self._queue.pop(), park(self._retry))  # newest first

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
