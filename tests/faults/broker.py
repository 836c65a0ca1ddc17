"""A broker of the suite's own (`deploy/local/kafka` with its own folder and ports), for the
scenario that stops it: the shared broker must never stop."""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass

from tests.integration.kafka import LOCAL_KAFKA, REPO

# Jars are copied into this folder once and reused; the data is wiped at each fresh start.
HOME = REPO / ".cache" / "kafka-faults"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class PrivateBroker:
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, fresh: bool = False) -> None:
        """Start, and return once it answers; the same folder keeps the same data."""
        await self._run("start", fresh)

    async def stop(self) -> None:
        await self._run("stop")

    async def _run(self, action: str, fresh: bool = False) -> None:
        env = {
            **os.environ,
            "KAFKA_LOCAL_HOME": str(HOME),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_LOCAL_FRESH": "1" if fresh else "0",
        }
        process = await asyncio.create_subprocess_exec(
            str(LOCAL_KAFKA),
            action,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 600)
        assert process.returncode == 0, f"deploy/local/kafka {action}: {out!r} {err!r}"
