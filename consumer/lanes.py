"""A lane per channel: its queue, its workers, its rate limit. Lanes never wait on each other."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Protocol

import structlog

from .catalog import Channel
from .config import RetryConfig
from .deadletter import DeadLetterWriter, for_delivery
from .delivery import Delivery
from .outcome import Done, GiveUp, Kind, Outcome, RetrySoon, decide
from .ratelimit import RateLimiter, TokenBucket, Unlimited

log = structlog.get_logger(__name__)


class Transport(Protocol):
    async def send(self, delivery: Delivery) -> Outcome: ...


def limiter_for(channel: Channel) -> RateLimiter:
    if channel.rate_limit is None:
        return Unlimited()
    return TokenBucket(channel.rate_limit.per_second, channel.rate_limit.capacity)


class ChannelLane:
    def __init__(
        self,
        channel: Channel,
        transport: Transport,
        dead_letters: DeadLetterWriter,
        retry: RetryConfig,
        rng: random.Random | None = None,
    ) -> None:
        self.channel = channel
        self._transport = transport
        self._dead_letters = dead_letters
        self._retry = retry
        self._rng = rng or random.Random()
        self._limiter = limiter_for(channel)
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._timers: dict[int, asyncio.TimerHandle] = {}  # id(delivery) -> its retry timer
        self._workers: list[asyncio.Task[None]] = []
        self.in_flight = 0  # accepted and not yet handed off

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"lane:{self.channel.name}:{i}")
            for i in range(self.channel.max_concurrency)
        ]

    def submit(self, delivery: Delivery) -> None:
        self.in_flight += 1
        self._queue.put_nowait(delivery)

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
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
            self._apply(delivery, outcome)

    def _apply(self, delivery: Delivery, outcome: Outcome) -> None:
        match decide(outcome, delivery.attempts, self._retry, self._rng):
            case Done():
                self._finish(delivery)
            case RetrySoon(delay):
                # A timer, not a sleeping worker: the worker is free for other deliveries.
                log.debug(
                    "delivery.retry",
                    channel=self.channel.name,
                    delay=delay,
                    attempt=delivery.attempts,
                    kind=outcome.kind,
                    status=outcome.status,
                )
                loop = asyncio.get_running_loop()
                self._timers[id(delivery)] = loop.call_later(delay, self._requeue, delivery)
            case GiveUp(reason):
                self._dead_letters.submit(
                    for_delivery(delivery, reason), lambda: self._finish(delivery)
                )

    def _requeue(self, delivery: Delivery) -> None:
        del self._timers[id(delivery)]
        self._queue.put_nowait(delivery)

    def _finish(self, delivery: Delivery) -> None:
        self.in_flight -= 1
        delivery.finish()

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
