"""A test's helper server in a process of its own (a receiver, a fault proxy): its timing is
then its own, not the test's event loop's.

The module runs as `python -m MODULE PORT_FILE ARGS...`, writes the ports it listens on to
PORT_FILE (whole, by a rename) once it listens, and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path

from tests.support.polling import until


def ready(port_file: Path, *ports: int) -> None:
    """In the helper: say it listens, on these ports."""
    written = port_file.with_suffix(".tmp")
    written.write_text(" ".join(map(str, ports)))
    written.rename(port_file)


def ahead_of_the_load() -> None:
    """In the helper: a higher priority than the replicas and the broker, where allowed (root).
    On 2 shared cores a helper waiting for its turn would stamp or pass a second's traffic at
    once."""
    with contextlib.suppress(OSError):
        os.nice(-10)


async def until_stopped() -> None:
    """In the helper: wait for SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


class HelperProcess:
    """The helper, seen from the test."""

    def __init__(self, module: str, *args: str) -> None:
        self._command = (sys.executable, "-m", module)
        self._args = args
        self._process: asyncio.subprocess.Process | None = None
        self._folder = tempfile.TemporaryDirectory(prefix="helper-")

    async def start(self, within: float = 30) -> list[int]:
        """Start it; its ports, once it listens."""
        port_file = Path(self._folder.name) / "ports"
        self._process = await asyncio.create_subprocess_exec(
            *self._command, str(port_file), *self._args
        )
        process = self._process

        def listening_or_ended() -> bool:
            return port_file.exists() or process.returncode is not None

        if not await until(listening_or_ended, within) or not port_file.exists():
            raise RuntimeError(f"{self._command[-1]} did not start within {within} s")
        return [int(port) for port in port_file.read_text().split()]

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._folder.cleanup()
