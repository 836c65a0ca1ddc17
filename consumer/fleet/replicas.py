"""How many replicas share the limits: learned from the consumer group, never guessed low.

While Redis is down each replica takes `limit / live replicas`, so a count that is too low
multiplies the limit: it must only ever err high. The count comes from Kafka (the group's
members holding partitions), not from a Redis heartbeat remembered from before the outage:
Kafka answers while Redis does not, and it sees the replicas started during the outage, which
is exactly when an autoscaler on the input lag adds some. Only a Stable group's answer counts:
a group that is rebalancing lists members with empty assignments, and a coordinator that is
moving answers with an error and no members. A higher count is taken at once, a lower one
only when the next Stable answer agrees. Until a first Stable answer, a replica assumes as
many replicas as the input topic has partitions, or one more than the fleet last counted
(kept in Redis for replicas yet to start).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Final, Protocol

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from consumer.config import KafkaConfig
from consumer.kafkatools import client_options
from consumer.observer import PartitionsOwned

from .link import Runner, Script

log = structlog.get_logger(__name__)

REFRESH_SECONDS: Final = 10.0
# The group is still forming when the service starts, and a rebalance ends within seconds:
# ask again after 1, 2, 4 and 8 s, and after 1 s while the group is not Stable.
_FIRST_REFRESH: Final = 1.0
_UNSETTLED_REFRESH: Final = 1.0
_ERROR, _STATE, _MEMBERS = 0, 2, 5  # a described group: error_code, group, state, ..., members
_ASSIGNMENT: Final = 4  # a member: member_id, client_id, client_host, metadata, assignment


def members_with_partitions(described: Any) -> int | None:
    """Members of the described group that hold at least one partition (an idle member, with
    more replicas than partitions, sends nothing and takes no share); None when the answer
    says nothing to trust: an error, a group that is not Stable, or no member holding any."""
    if described[_ERROR] != 0 or described[_STATE] != "Stable":
        return None
    count = 0
    for member in described[_MEMBERS]:
        raw = member[_ASSIGNMENT]
        if not raw:
            continue
        assignment = ConsumerProtocolMemberAssignment.decode(raw)
        if any(partitions for _, partitions in assignment.assignment):
            count += 1
    return count or None


class CountMemory(Protocol):
    """The fleet's last count, kept where a replica that starts later can read it."""

    async def last(self) -> int | None: ...

    async def remember(self, count: int) -> None: ...


class GroupMembers:
    """The live replica count of one consumer group, refreshed in the background."""

    def __init__(
        self,
        kafka: KafkaConfig,
        environ: Mapping[str, str] | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
        memory: CountMemory | None = None,
    ) -> None:
        self._group = kafka.group_id
        self._topic = kafka.topic
        self._options = client_options(kafka, environ)
        self._refresh = refresh_seconds
        self._memory = memory
        # What the service creates its topics with, until the broker tells the real count.
        self._count = kafka.topic_partitions
        self._source = "configured"  # where the count came from
        self._settled = False  # a Stable group has been counted
        self._lower: int | None = None  # a lower count, heard once: asked again to confirm
        self._rebalanced = asyncio.Event()  # this member got partitions: count again now
        self._assumed = False  # the input topic's partitions were asked for
        self._task: asyncio.Task[None] | None = None

    def count(self) -> int:
        return self._count

    def heard(self, details: object) -> None:
        """An observer hook: a rebalance gave this member its partitions, so the group
        changed. Count it again now rather than at the next refresh, up to 10 s away."""
        if isinstance(details, PartitionsOwned) and details.assigned:
            self._rebalanced.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rate_limiter:replicas")

    async def _run(self) -> None:
        admin: AIOKafkaAdminClient | None = None
        delay = _FIRST_REFRESH
        try:
            await self._recall()
            while True:
                wait = delay
                try:
                    if admin is None:
                        admin = await self._started_admin()
                    if not self._settled and not self._assumed:
                        await self._assume_partitions(admin)
                    counted = await self._described(admin)
                    if counted is None:
                        self._lower = None
                    if counted is None or not self._confirmed(counted):
                        wait = min(delay, _UNSETTLED_REFRESH)  # soon: a rebalance ends soon
                    else:
                        self._settled = True
                        self._learn(counted, "group")
                        await self._share(counted)
                except Exception as exc:  # keep the count; Kafka's outages are logged elsewhere
                    log.debug("rate_limiter.replicas_unknown", error=repr(exc)[:300])
                self._rebalanced.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._rebalanced.wait(), wait)
                    delay = _FIRST_REFRESH  # a rebalance: follow it closely for a while
                    continue
                delay = min(delay * 2, self._refresh)
        finally:
            if admin is not None:
                await admin.close()

    def _confirmed(self, counted: int) -> bool:
        """More replicas count at once; fewer only once two Stable answers in a row say so
        (a group still forming is Stable with its first members alone for a moment)."""
        if counted >= self._count or counted == self._lower:
            self._lower = None
            return True
        self._lower = counted
        return False

    async def _recall(self) -> None:
        """One more than the fleet counted last: this replica is joining it."""
        if self._memory is None:
            return
        with contextlib.suppress(Exception):  # Redis down: the partition count stands
            last = await self._memory.last()
            if last is not None and not self._settled:
                self._learn(last + 1, "remembered")

    async def _assume_partitions(self, admin: AIOKafkaAdminClient) -> None:
        """Until the group was counted, and unless Redis remembered a count: as many replicas
        as the input topic has partitions, the most that can hold one."""
        async with asyncio.timeout(self._refresh):
            [described] = await admin.describe_topics([self._topic])
        partitions = len(described.get("partitions") or ())
        if described.get("error_code") == 0 and partitions:
            self._assumed = True
            if self._source == "configured":
                self._learn(partitions, "partitions")

    def _learn(self, count: int, source: str) -> None:
        if count != self._count or source != self._source:
            # What the limits are divided by if Redis stops answering, and whence: a line.
            log.info("rate_limiter.replicas", group=self._group, replicas=count, source=source)
        self._count, self._source = count, source

    async def _share(self, count: int) -> None:
        if self._memory is not None:
            with contextlib.suppress(Exception):  # the next refresh tries again
                await self._memory.remember(count)

    async def _started_admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(**self._options)
        try:
            async with asyncio.timeout(self._refresh):
                await admin.start()
        except BaseException:
            await admin.close()
            raise
        return admin

    async def _described(self, admin: AIOKafkaAdminClient) -> int | None:
        async with asyncio.timeout(self._refresh):
            responses = await admin.describe_consumer_groups([self._group])
        counts = [
            members_with_partitions(group) for response in responses for group in response.groups
        ]
        if not counts or any(count is None for count in counts):
            return None
        return sum(count for count in counts if count is not None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class RedisCountMemory:
    """`CountMemory` in one key of the deployment, kept a minute past the last refresh."""

    def __init__(self, link: Runner, key: str) -> None:
        self._link = link
        self._key = key

    async def last(self) -> int | None:
        answer = await self._link.run(_LAST, (self._key,), ())
        return int(answer) if answer else None

    async def remember(self, count: int) -> None:
        await self._link.run(_REMEMBER, (self._key,), (count,))


_LAST = Script.of("replicas_read", "return redis.call('GET', KEYS[1])")
_REMEMBER = Script.of("replicas_write", "redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000) return 1")
