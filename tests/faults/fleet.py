"""Replicas of one consumer group as real `webhook-consumer run` processes, named like the
StatefulSet's pods (their name is their static group membership id)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType
from typing import Any

from consumer.service import INSTANCE_ID_ENV
from tests.support.polling import until
from tests.support.processes import ServiceProcess, run_args

Partition = tuple[str, int]


class Replica:
    """One pod: a `webhook-consumer run` process under its name, restartable; its stderr
    (JSON lines) appended to `<name>.log` across restarts."""

    def __init__(self, name: str, config: Path, environ: dict[str, str], folder: Path) -> None:
        self.name = name
        self.folder = folder  # its working directory, as a pod has its own
        self.process = ServiceProcess(
            run_args(config),
            {**environ, INSTANCE_ID_ENV: name},
            folder / f"{name}.log",
            cwd=folder,
        )
        self._lines_before_start = 0

    @property
    def log(self) -> Path:
        return self.process.log.path

    async def start(self) -> None:
        self._lines_before_start = len(self.process.log.lines())  # a restart appends
        await self.process.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    async def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill delivers it: no drain, no last commit."""
        await self.process.kill()

    async def stop(self, within: float = 60) -> int:
        """SIGTERM, then its exit status once it has drained."""
        return await self.process.stop(within)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its log's lines of event `name`, across its restarts."""
        return self.process.log.events(name)

    def assignment(self) -> set[Partition]:
        """What this process was last assigned (its latest `partitions.assigned` line); empty
        until it has joined the group."""
        owned: set[Partition] = set()
        for line in self.process.log.lines()[self._lines_before_start :]:
            if line.get("event") == "partitions.assigned":
                owned = {(topic, partition) for topic, partition in line["partitions"]}
        return owned

    def tail(self, lines: int = 30) -> str:
        return self.process.log.tail(lines)


class Fleet:
    """Replicas named `<prefix>-0`, `<prefix>-1`, ...; whatever still runs at exit is killed."""

    def __init__(self, size: int, config: Path, environ: dict[str, str], folder: Path) -> None:
        self.replicas = [
            Replica(f"webhook-consumer-{i}", config, environ, folder) for i in range(size)
        ]

    async def __aenter__(self) -> Fleet:
        await asyncio.gather(*(replica.start() for replica in self.replicas))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for replica in self.replicas:
            if replica.running:
                await replica.kill()

    async def stop(self) -> list[int]:
        """SIGTERM to every replica at once (a rollout's scale-down): their exit statuses."""
        return list(await asyncio.gather(*(replica.stop() for replica in self.replicas)))

    def assignments(self) -> dict[str, set[Partition]]:
        return {replica.name: replica.assignment() for replica in self.replicas}

    def logs(self) -> str:
        return "\n".join(f"--- {r.name} ---\n{r.tail()}" for r in self.replicas)

    async def settled(self, topic: str, partitions: int, within: float) -> bool:
        """Poll until every replica owns part of `topic` and together they own all of it."""

        def owned_once() -> bool:
            owned = [{p for t, p in a if t == topic} for a in self.assignments().values()]
            # Each partition exactly once: no replica's latest line is stale from before a move.
            counts = sorted(p for mine in owned for p in mine)
            return all(owned) and counts == list(range(partitions))

        return await until(owned_once, within, every=0.2)
