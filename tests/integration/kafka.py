"""Where integration tests find Kafka: env var, else testcontainers, else deploy/local."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port as free_port  # its old home, kept for imports

REPO = Path(__file__).resolve().parents[2]
LOCAL_KAFKA = REPO / "deploy" / "local" / "kafka"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return probe.returncode == 0


@contextmanager
def kafka_broker() -> Iterator[str]:
    """Yield a bootstrap address; stop only what this function started."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer  # only needed where Docker runs

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    already_running = subprocess.run([LOCAL_KAFKA, "status"], capture_output=True, check=False)
    started = subprocess.run(
        [LOCAL_KAFKA, "start"], capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        raise RuntimeError(f"deploy/local/kafka start failed:\n{started.stderr}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        if already_running.returncode != 0:
            subprocess.run([LOCAL_KAFKA, "stop"], capture_output=True, check=False)


@dataclass(frozen=True, slots=True)
class PrivateBroker:
    """A broker of a test's own (`deploy/local/kafka` with its own folder and ports), for the
    tests that stop it: the shared broker must never stop. Jars are copied into `home` once and
    reused; the data is wiped at each fresh start."""

    home: Path
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
            "KAFKA_LOCAL_HOME": str(self.home),
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
