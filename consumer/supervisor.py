"""`run --workers N`: N members of the same consumer group in one container, one per process.

The parent only supervises. Each worker is `webhook-consumer run` in a child process (the same
single-process service), told its index through the environment. The parent forwards
SIGTERM/SIGINT/SIGHUP to every child, restarts a child that crashed after a capped backoff, and
exits once every child has drained after a stop: 0 when all drained cleanly, 1 when a child
never started (bad broker, say) or did not stop cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

log = structlog.get_logger(__name__)

WORKER_ENV: Final = "WEBHOOK_CONSUMER_WORKER"  # this child's index, 0 .. N-1
WORKERS_ENV: Final = "WEBHOOK_CONSUMER_WORKERS"  # N
READY_FD_ENV: Final = "WEBHOOK_CONSUMER_READY_FD"  # the child writes one byte here once started
PARENT_ENV: Final = "WEBHOOK_CONSUMER_SUPERVISOR_PID"

_STOPS: Final = (signal.SIGTERM, signal.SIGINT)
_FORWARDED: Final = (*_STOPS, signal.SIGHUP)
_PR_SET_PDEATHSIG: Final = 1


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Who a child is among the workers; later per-worker settings derive from `index`."""

    index: int
    count: int


def worker_identity(environ: Mapping[str, str] | None = None) -> WorkerIdentity | None:
    """This process's place among the workers, or None when it runs alone."""
    environ = os.environ if environ is None else environ
    if WORKER_ENV not in environ:
        return None
    return WorkerIdentity(int(environ[WORKER_ENV]), int(environ.get(WORKERS_ENV, "1")))


def child_setup(environ: Mapping[str, str] | None = None) -> Callable[[], None] | None:
    """In a worker child: die with the supervisor, and return the callback that tells it the
    service has started (None when this process is not a supervised worker)."""
    environ = os.environ if environ is None else environ
    if READY_FD_ENV not in environ:
        return None
    _stop_with_parent(int(environ.get(PARENT_ENV, "0")))
    fd = int(environ[READY_FD_ENV])

    def started() -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: it no longer asks
            os.write(fd, b"1")
        with contextlib.suppress(OSError):
            os.close(fd)

    return started


def _stop_with_parent(parent: int) -> None:
    """A SIGKILLed supervisor must not leave its workers running unsupervised: the kernel
    sends them SIGTERM (a normal drain) when it dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if parent and os.getppid() != parent:  # it died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_command(config_path: str) -> list[str]:
    """How a worker child is started: the single-process service on the same config."""
    return [sys.executable, "-m", "consumer", "run", "--config", config_path]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait before restarting a crashed child: initial, doubled per crash in a row, capped.
    A child that ran `reset_after` seconds before crashing starts over at `initial`."""

    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def delay(self, crashes_in_a_row: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** max(0, crashes_in_a_row - 1)))


class Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        *,
        stop_timeout: float,
        environ: Mapping[str, str] | None = None,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._command = list(command)
        self._workers = workers
        self._stop_timeout = stop_timeout  # after a stop: then SIGKILL, and exit 1
        self._environ = dict(os.environ if environ is None else environ)
        self._backoff = backoff
        self._children: dict[int, asyncio.subprocess.Process] = {}  # index -> running child
        self._stopping = asyncio.Event()
        self._failed = False

    @property
    def pids(self) -> dict[int, int]:
        return {index: child.pid for index, child in self._children.items()}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in _FORWARDED:
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info("workers.starting", workers=self._workers)
        slots = [
            asyncio.create_task(self._keep(i), name=f"worker:{i}") for i in range(self._workers)
        ]
        try:
            await asyncio.gather(*slots)
        finally:
            for sig in _FORWARDED:
                loop.remove_signal_handler(sig)
        log.info("workers.stopped", clean=not self._failed)
        return 1 if self._failed else 0

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig in _STOPS:
            self.stop(sig)
        else:
            self._forward(sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if not self._stopping.is_set():
            self._stopping.set()
            asyncio.get_running_loop().call_later(self._stop_timeout, self._kill_stragglers)
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        for child in self._children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)

    def _kill_stragglers(self) -> None:
        if self._children:
            log.error("workers.stop_timeout", pids=sorted(self.pids.values()))
            self._failed = True
        for child in self._children.values():
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    async def _keep(self, index: int) -> None:
        """Run child `index` until a stop, restarting it whenever it ends on its own."""
        loop = asyncio.get_running_loop()
        crashes = 0
        ever_started = False
        while not self._stopping.is_set():
            child, ready = await self._spawn(index)
            began = loop.time()
            started = await ready
            code = await child.wait()
            del self._children[index]
            if self._stopping.is_set():
                # A child stopped before its handlers were installed dies of the signal itself.
                if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                    log.error("worker.unclean_stop", worker=index, pid=child.pid, exit=code)
                    self._failed = True
                return
            if not started and not ever_started:
                log.error("worker.failed_to_start", worker=index, pid=child.pid, exit=code)
                self._failed = True
                self.stop()
                return
            ever_started = ever_started or started
            crashes = 1 if loop.time() - began >= self._backoff.reset_after else crashes + 1
            delay = self._backoff.delay(crashes)
            event = "worker.crashed" if code else "worker.exited"
            log.warning(event, worker=index, pid=child.pid, exit=code, restart_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _spawn(self, index: int) -> tuple[asyncio.subprocess.Process, asyncio.Future[bool]]:
        read_fd, write_fd = os.pipe()
        environ = {
            **self._environ,
            WORKER_ENV: str(index),
            WORKERS_ENV: str(self._workers),
            READY_FD_ENV: str(write_fd),
            PARENT_ENV: str(os.getpid()),
        }
        try:
            child = await asyncio.create_subprocess_exec(
                *self._command,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
                # Its own process group: a terminal's Ctrl-C reaches the children only once,
                # through the parent.
                process_group=0,
            )
        finally:
            os.close(write_fd)
        self._children[index] = child
        log.info("worker.started", worker=index, pid=child.pid)
        if self._stopping.is_set():  # the stop came while it was being started
            child.send_signal(signal.SIGTERM)
        return child, _ready(read_fd)


def _ready(fd: int) -> asyncio.Future[bool]:
    """True once the child wrote its byte; False when it exited (end of file) first."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()

    def readable() -> None:
        loop.remove_reader(fd)
        try:
            data = os.read(fd, 1)
        except OSError:
            data = b""
        os.close(fd)
        if not ready.done():
            ready.set_result(bool(data))

    loop.add_reader(fd, readable)
    return ready
