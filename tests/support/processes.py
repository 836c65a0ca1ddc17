"""`webhook-consumer` as its own process: one launcher for every test that runs one.

`ServiceProcess` is a long-running command (`run`, `run --workers`, `receiver`, a paced `dlq
replay`) writing its stderr to a file the test reads back as JSON lines; `run_cli` is a command
that ends by itself. The `launch` fixture of `tests/conftest.py` kills whatever a test left
running, so a failed assertion never leaves a consumer in the next test's group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .polling import until


class JsonLog:
    """A process's stderr file of JSON lines, read back as it grows (appended across restarts).
    A line cut short by SIGKILL, or not JSON, is left out of `lines`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8", errors="replace") if self.path.exists() else ""

    def lines(self) -> list[dict[str, Any]]:
        parsed = []
        for text in self.text().splitlines():
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict):
                parsed.append(line)
        return parsed

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    def count(self, name: str) -> int:
        return len(self.events(name))

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    async def wait_for(self, name: str, within: float, count: int = 1) -> bool:
        """Until `count` lines of event `name` are in the file; False at the deadline."""
        return await until(lambda: self.count(name) >= count, within, every=0.1)


class ServiceProcess:
    """`python -m consumer ARGS` with the test's environment on top of this one's; stdout
    discarded (or appended to `output`), stderr appended to `log`. Started with `start()`, and
    again after it ended (a pod restarted under its name)."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        log: Path,
        cwd: Path | None = None,
        output: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log = JsonLog(log)
        self.cwd = cwd
        self.output = output
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> ServiceProcess:
        assert not self.running, "already running"
        with contextlib.ExitStack() as files:
            sink = files.enter_context(self.log.path.open("ab"))
            out = files.enter_context(self.output.open("ab")) if self.output else None
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "consumer",
                *self.args,
                env={**os.environ, **self.env},
                stdout=out or asyncio.subprocess.DEVNULL,
                stderr=sink,
                cwd=self.cwd,
            )
        return self

    def output_text(self) -> str:
        assert self.output is not None, "stdout was discarded"
        return self.output.read_text(encoding="utf-8", errors="replace")

    @property
    def pid(self) -> int:
        assert self.process is not None, "never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def send_signal(self, sig: signal.Signals) -> None:
        assert self.process is not None, "never started"
        if self.process.returncode is None:
            self.process.send_signal(sig)

    async def stop(self, within: float = 60) -> int:
        """SIGTERM (a pod's stop), then its exit status once it has drained."""
        self.send_signal(signal.SIGTERM)
        return await self.wait(within)

    async def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill delivers it: no drain, no last commit."""
        self.send_signal(signal.SIGKILL)
        await self.wait(30)

    async def wait(self, within: float = 60) -> int:
        assert self.process is not None, "never started"
        return await asyncio.wait_for(self.process.wait(), within)


def run_args(config: Path, *more: str) -> list[str]:
    """The arguments of `webhook-consumer run --config CONFIG MORE...`."""
    return ["run", "--config", str(config), *more]


async def run_cli(
    *args: str, env: dict[str, str], within: float = 60, merge_stderr: bool = False
) -> tuple[int, str, str]:
    """`webhook-consumer ARGS`, a command that ends by itself: exit status, stdout, stderr
    (stderr folded into stdout, and "" returned for it, with `merge_stderr`)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), (err or b"").decode()


# The `launch` fixture: launch(args, env, log, cwd=None, output=None) -> ServiceProcess.
Launch = Callable[..., ServiceProcess]
