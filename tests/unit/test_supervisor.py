"""The supervisor with stand-in children: small Python processes that report what they got."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.supervisor import Backoff, Supervisor, WorkerIdentity, worker_identity
from tests.support.polling import wait_until

# A stand-in worker: says it started (unless told not to), writes every signal it gets to
# <dir>/<index>.log, exits 0 on SIGTERM; "crash-once" dies with 7 in its first life.
CHILD = """
import os, pathlib, signal, sys
folder, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
index = os.environ["WEBHOOK_CONSUMER_WORKER"]
def note(sig, _frame):
    with (folder / f"{index}.log").open("a") as log:
        log.write(signal.Signals(sig).name + "\\n")
    if sig == signal.SIGTERM:
        sys.exit(0)
signal.signal(signal.SIGHUP, note)
signal.signal(signal.SIGTERM, note)
if mode == "never-ready":
    sys.exit(3)
lives = folder / f"{index}.lives"
life = int(lives.read_text()) if lives.exists() else 0
lives.write_text(str(life + 1))
fd = int(os.environ["WEBHOOK_CONSUMER_READY_FD"])
os.write(fd, b"1")
os.close(fd)
if mode == "crash-once" and life == 0:
    os._exit(7)
while True:
    signal.pause()
"""


def _supervisor(folder: Path, mode: str, workers: int = 2) -> Supervisor:
    return Supervisor(
        [sys.executable, "-c", CHILD, str(folder), mode],
        workers,
        stop_timeout=20,
        backoff=Backoff(initial=0.05, maximum=0.2),
    )


async def _until(condition: Callable[[], bool], within: float = 20) -> None:
    await wait_until(condition, within, every=0.05)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_backoff_doubles_per_crash_in_a_row_up_to_the_cap() -> None:
    backoff = Backoff(initial=1, maximum=30)
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_worker_identity_comes_from_the_environment() -> None:
    assert worker_identity({}) is None
    identity = worker_identity({"WEBHOOK_CONSUMER_WORKER": "1", "WEBHOOK_CONSUMER_WORKERS": "4"})
    assert identity == WorkerIdentity(index=1, count=4)


async def test_signals_reach_every_child_and_sigterm_ends_with_0(tmp_path: Path) -> None:
    supervisor = _supervisor(tmp_path, "serve")
    run = asyncio.create_task(supervisor.run())
    await _until(lambda: all((tmp_path / f"{i}.lives").exists() for i in range(2)))
    pids = set(supervisor.pids.values())
    assert len(pids) == 2

    os.kill(os.getpid(), signal.SIGHUP)  # to the supervisor, which forwards it
    await _until(lambda: all(_lines(tmp_path / f"{i}.log") == ["SIGHUP"] for i in range(2)))
    os.kill(os.getpid(), signal.SIGTERM)

    assert await asyncio.wait_for(run, 20) == 0
    assert [_lines(tmp_path / f"{i}.log") for i in range(2)] == [["SIGHUP", "SIGTERM"]] * 2
    assert not [pid for pid in pids if _alive(pid)]


async def test_a_crashed_child_is_restarted(tmp_path: Path) -> None:
    supervisor = _supervisor(tmp_path, "crash-once", workers=1)
    run = asyncio.create_task(supervisor.run())
    await _until(lambda: _lines(tmp_path / "0.lives") == ["2"] and supervisor.pids)
    supervisor.stop()
    assert await asyncio.wait_for(run, 20) == 0


async def test_a_child_that_never_started_stops_all_and_ends_with_1(tmp_path: Path) -> None:
    assert await asyncio.wait_for(_supervisor(tmp_path, "never-ready").run(), 20) == 1


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_must_be_a_positive_whole_number(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from consumer.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--workers", value, "--config", "unused.yaml"])
    assert exit_info.value.code == 2
    assert "expected a whole number >= 1" in capsys.readouterr().err
