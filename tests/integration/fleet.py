"""Helpers for the fleet-wide limit tests: a private redis-server that a test may kill, a
receiver that answers slowly and counts concurrent requests, and the figures they check."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from aiohttp import web

from tests.support.ports import free_port
from tests.support.processes import JsonLog, Launch, run_args
from tests.support.servers import HookReceiver, signed
from tests.support.timing import busiest_second as busiest_second  # where the fleet tests
from tests.support.timing import steady_rate as steady_rate  # have found them


class PrivateRedis:
    """A redis-server of the test's own (own port and folder, no persistence): stopping it
    never disturbs the shared one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server is not installed (deploy/local/redis installs it)"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)  # polling for the server to answer, with a deadline
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 20 s")

    def freeze(self) -> None:
        """Up, but never answers (SIGSTOP): what a hung or partitioned Redis looks like."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    redis = PrivateRedis(folder)
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


class SlowReceiver(HookReceiver):
    """Answers every verified request after `delay` seconds and counts how many were being
    answered at once. Its listen backlog holds every connection the test can open."""

    def __init__(self, secrets: dict[str, str], delay: float) -> None:
        super().__init__()
        self.secrets = secrets
        self.delay = delay
        self.current = 0
        self.most = 0
        self.answered: list[float] = []  # monotonic arrival times of verified requests
        self.unverified = 0

    async def hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not signed(raw, request, self.secrets.get(request.match_info["channel"], "")):
            self.unverified += 1
            return web.Response(status=401)
        self.current += 1
        self.most = max(self.most, self.current)
        self.answered.append(time.monotonic())
        self.arrived()
        try:
            await asyncio.sleep(self.delay)  # the slowness under test
        finally:
            self.current -= 1
        return web.Response(text="ok")


ProcessLog = JsonLog  # the JSON lines a `webhook-consumer run` process writes to its stderr


def wall_to_monotonic(timestamp: str) -> float:
    """A log line's ISO timestamp on this process's monotonic clock."""
    offset = time.time() - time.monotonic()
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() - offset


class ReplicaProcesses:
    """`count` processes of `webhook-consumer run` on one config, each logging to its file,
    started through the `launch` fixture (which kills any a failed test leaves running)."""

    def __init__(
        self, launch: Launch, config: Path, environ: dict[str, str], folder: Path, count: int
    ) -> None:
        self._processes = [
            launch(run_args(config), environ, folder / f"replica-{n}.log") for n in range(count)
        ]
        self.logs = [process.log for process in self._processes]

    async def start(self) -> None:
        for process in self._processes:
            await process.start()

    async def stop(self) -> list[int | None]:
        """SIGTERM each (they drain and commit); their exit statuses."""
        for process in self._processes:
            process.send_signal(signal.SIGTERM)
        return [await process.wait() for process in self._processes]
