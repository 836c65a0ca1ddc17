"""py-spy on the service during S1, and a summary of where its CPU went.

py-spy samples the running process from outside (no change to the service); `--format raw`
writes collapsed stacks ("outer;...;inner count"), summarised here by function and by package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .context import Bench

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE = re.compile(r"^.*/(site-packages|lib/python3\.\d+)/")
_OURS = re.compile(r"^.*/consumer/")


class PySpy:
    """A `measure.Hook`: records the process from the first request to the end of the window."""

    def __init__(self, bench: Bench, name: str, rate: int = 100) -> None:
        self.path = bench.folder / f"{name}.pyspy.txt"
        self._log = bench.log("pyspy")
        self._rate = rate

    @contextlib.asynccontextmanager
    async def __call__(self, pid: int) -> AsyncIterator[None]:
        binary = Path(sys.executable).with_name("py-spy")
        with self._log.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                str(binary),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(self._rate),
                "--format",
                "raw",
                "--output",
                str(self.path),
                "--nonblocking",
                "--full-filenames",
                stdout=log,
                stderr=log,
            )
        try:
            yield
        finally:
            process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await asyncio.wait_for(process.wait(), 60)

    def summary(self, top: int = 25) -> dict[str, Any]:
        return summarize(self.path, top)


def _frame(frame: str) -> tuple[str, str]:
    """(function, shortened file) of one py-spy frame."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    file = match["file"]
    if _SITE.match(file):  # aiohttp/client.py, aiokafka/consumer/fetcher.py, uuid.py
        return match["function"], _SITE.sub("", file)
    return match["function"], _OURS.sub("consumer/", file)


def _package(file: str) -> str:
    """consumer/lanes.py stays a module; aiohttp/client.py counts as aiohttp."""
    return file if file.startswith("consumer/") else file.split("/", 1)[0]


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    own: Counter[str] = Counter()  # samples where the function was running itself
    total: Counter[str] = Counter()  # samples where it was anywhere on the stack
    packages: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f[0].startswith("thread ")]
        if not frames:
            continue
        function, file = frames[-1]
        own[f"{function} ({file})"] += count
        packages[_package(file)] += count
        for name in {f"{fn} ({fl})" for fn, fl in frames}:
            total[name] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / samples, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": samples,
        "self_percent": share(own),
        "inclusive_percent": share(total),
        "by_file_self_percent": share(packages),
    }


def main() -> None:
    """`python -m bench.profiling FILE`: where the CPU went, as a table. FILE is a raw py-spy
    file (`.cache/bench/runs/<time>/*.pyspy.txt`) or a results JSON holding saved profiles."""
    path = Path(sys.argv[1])
    if path.suffix == ".json":
        document = json.loads(path.read_text(encoding="utf-8"))
        for result in document.get("results", []):
            profile = result.get("figures", {}).get("profile")
            if profile:
                print(f"== {result['scenario']}")
                _print(profile)
        return
    _print(summarize(path))


def _print(result: dict[str, Any]) -> None:
    print(f"{result['samples']} samples")
    for title in ("self_percent", "inclusive_percent", "by_file_self_percent"):
        print(f"\n{title}:")
        for name, percent in result[title]:
            print(f"  {percent:5.1f}%  {name}")


if __name__ == "__main__":
    main()
