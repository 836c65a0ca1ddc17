"""How many replicas share the limits: learned from the consumer group, not guessed.

While Redis is down each replica takes `limit / live replicas`. The count comes from Kafka
(the group's members holding partitions), not from a Redis heartbeat remembered from before
the outage: Kafka answers while Redis does not, and it sees the replicas started during the
outage, which is exactly when an autoscaler on the input lag adds some.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, Final

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from consumer.config import KafkaConfig
from consumer.kafkatools import client_options

log = structlog.get_logger(__name__)

REFRESH_SECONDS: Final = 10.0
# The group is still forming when the service starts: ask again after 1, 2, 4 and 8 s.
_FIRST_REFRESH: Final = 1.0
_MEMBERS: Final = 5  # a described group: error_code, group, state, protocol_type, protocol, members
_ASSIGNMENT: Final = 4  # a member: member_id, client_id, client_host, metadata, assignment


def members_with_partitions(described: Any) -> int:
    """Members of the described group that hold at least one partition: an idle member (more
    replicas than partitions) sends nothing and takes no share."""
    count = 0
    for member in described[_MEMBERS]:
        raw = member[_ASSIGNMENT]
        if not raw:
            continue
        assignment = ConsumerProtocolMemberAssignment.decode(raw)
        if any(partitions for _, partitions in assignment.assignment):
            count += 1
    return count


class GroupMembers:
    """The live replica count of one consumer group, refreshed in the background.

    Until the first answer (and after any failure) it keeps what it knew, starting at 1.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        environ: Mapping[str, str] | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
    ) -> None:
        self._group = kafka.group_id
        self._options = client_options(kafka, environ)
        self._refresh = refresh_seconds
        self._count = 1
        self._task: asyncio.Task[None] | None = None

    def count(self) -> int:
        return self._count

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rate_limiter:replicas")

    async def _run(self) -> None:
        admin: AIOKafkaAdminClient | None = None
        delay = _FIRST_REFRESH
        try:
            while True:
                try:
                    if admin is None:
                        admin = await self._started_admin()
                    self._learn(max(1, await self._described(admin)))
                except (
                    Exception
                ) as exc:  # keep the last count; Kafka's outages are logged elsewhere
                    log.debug("rate_limiter.replicas_unknown", error=repr(exc)[:300])
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._refresh)
        finally:
            if admin is not None:
                await admin.close()

    def _learn(self, count: int) -> None:
        if count != self._count:
            # What the limits are divided by if Redis stops answering: worth a line.
            log.info("rate_limiter.replicas", group=self._group, replicas=count)
            self._count = count

    async def _started_admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(**self._options)
        try:
            async with asyncio.timeout(self._refresh):
                await admin.start()
        except BaseException:
            await admin.close()
            raise
        return admin

    async def _described(self, admin: AIOKafkaAdminClient) -> int:
        async with asyncio.timeout(self._refresh):
            responses = await admin.describe_consumer_groups([self._group])
        return sum(
            members_with_partitions(group) for response in responses for group in response.groups
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
