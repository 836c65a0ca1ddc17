"""What the group has committed, sampled while it runs: the rate at which a replica finishes
records, as its commits tell it (the commit point plus the finished offsets in the metadata)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient

from consumer import offsetmap
from tests.integration.support import end_offsets
from tests.support.polling import until

Partition = tuple[str, int]

SAMPLE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Commit:
    offset: int
    finished_above: frozenset[int]  # offsets above `offset` the metadata names as finished

    @property
    def finished(self) -> int:
        """Records of the partition finished per this commit (offsets start at 0)."""
        return self.offset + len(self.finished_above)


async def committed(bootstrap: str, group: str) -> dict[Partition, Commit]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await _read(admin, group)
    finally:
        await admin.close()


async def _read(admin: AIOKafkaAdminClient, group: str) -> dict[Partition, Commit]:
    found = await admin.list_consumer_group_offsets(group)
    return {
        (tp.topic, tp.partition): Commit(
            meta.offset, frozenset(offsetmap.decode(meta.metadata, meta.offset))
        )
        for tp, meta in found.items()
        if meta.offset >= 0
    }


async def uncommitted(bootstrap: str, group: str, partitions: set[Partition]) -> int:
    """How many of these partitions hold records beyond the group's committed offset: only
    those can have anything redone."""
    commits = await committed(bootstrap, group)
    count = 0
    for topic in {t for t, _ in partitions}:
        ends = await end_offsets(bootstrap, topic)
        for t, p in partitions:
            mark = commits.get((t, p))
            if t == topic and ends.get(p, 0) > (mark.offset if mark else 0):
                count += 1
    return count


class CommitWatch:
    """Samples the group's commits every 0.1 s until stopped."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self._group = group
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.samples: list[tuple[float, dict[Partition, Commit]]] = []  # (monotonic, commits)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CommitWatch:
        await self._admin.start()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._admin.close()

    async def _sample(self) -> None:
        while True:
            read = await _read(self._admin, self._group)
            self.samples.append((time.monotonic(), read))
            await asyncio.sleep(SAMPLE_SECONDS)  # a sampling period, not a condition

    async def recommitted(
        self, partitions: set[Partition], than: dict[Partition, Commit], within: float
    ) -> dict[Partition, Commit] | None:
        """The first commit that changes one of these partitions from `than` (a new owner
        committed it), asked for as fast as the broker answers; None on timeout."""
        seen: list[dict[Partition, Commit]] = []

        async def changed() -> bool:
            now = await _read(self._admin, self._group)
            seen.append(now)
            return any(now.get(p) not in (None, than.get(p)) for p in partitions)

        return seen[-1] if await until(changed, within, every=0.01) else None

    def finished_per_second(self, partitions: set[Partition], before: float) -> float:
        """Records of `partitions` finished per second over the last second before `before`
        (time.monotonic()), as the commits seen then tell."""
        seen = [(at, commits) for at, commits in self.samples if at <= before]
        assert seen, "no commit was sampled before the failure"
        last_at, last = seen[-1]
        first_at, first = next((s for s in seen if s[0] >= last_at - 1.0), seen[-1])
        if last_at - first_at < 0.5:
            raise AssertionError("too few commit samples before the failure to measure a rate")

        def finished(commits: dict[Partition, Commit]) -> int:
            return sum(commits[p].finished for p in partitions if p in commits)

        return (finished(last) - finished(first)) / (last_at - first_at)
