"""Replicas of one consumer group as real `webhook-consumer run` processes, named like the
StatefulSet's pods (their name is their static group membership id)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from consumer.service import INSTANCE_ID_ENV

Partition = tuple[str, int]


class Replica:
    def __init__(self, name: str, config: Path, environ: dict[str, str], folder: Path) -> None:
        self.name = name
        self._config = config
        self._environ = environ
        self.folder = folder  # its working directory, as a pod has its own
        self.log = folder / f"{name}.log"  # its stderr: JSON lines, appended across restarts
        self._process: asyncio.subprocess.Process | None = None
        self._lines_before_start = 0

    async def start(self) -> None:
        self._lines_before_start = self._line_count()  # a restart appends to the same file
        with self.log.open("ab") as sink:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "consumer",
                "run",
                "--config",
                str(self._config),
                env={**os.environ, **self._environ, INSTANCE_ID_ENV: self.name},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=sink,
                cwd=self.folder,
            )

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill delivers it: no drain, no last commit."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        await self._process.wait()

    async def stop(self, within: float = 60) -> int:
        """SIGTERM, then its exit status once it has drained."""
        assert self._process is not None
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self._process.wait(), within)

    def assignment(self) -> set[Partition]:
        """What this process was last assigned (its latest `partitions.assigned` line); empty
        until it has joined the group."""
        owned: set[Partition] = set()
        for line in self._lines()[self._lines_before_start :]:
            if line.get("event") == "partitions.assigned":
                owned = {(topic, partition) for topic, partition in line["partitions"]}
        return owned

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def _line_count(self) -> int:
        return len(self.log.read_bytes().splitlines()) if self.log.exists() else 0

    def _lines(self) -> list[dict[str, Any]]:
        parsed = []
        for text in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                parsed.append(json.loads(text))
            except ValueError:
                continue  # a line cut short by SIGKILL
        return parsed


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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            owned = [{p for t, p in a if t == topic} for a in self.assignments().values()]
            # Each partition exactly once: no replica's latest line is stale from before a move.
            counts = sorted(p for mine in owned for p in mine)
            if all(owned) and counts == list(range(partitions)):
                return True
            await asyncio.sleep(0.2)  # polling log files for a condition, with a deadline
        return False
