"""py-spy on the service during S1, and a summary of where its CPU went.

py-spy samples the running process from outside (no change to the service); `--format raw`
writes collapsed stacks ("outer;...;inner count"), summarised here by function and by package.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .context import Bench

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


class PySpy:
    """A `measure.Hook`: records the process from the first request to the end of the window."""

    def __init__(self, bench: Bench, rate: int = 100) -> None:
        self.path = bench.folder / "s1-w1.pyspy.txt"
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


def pyspy(bench: Bench) -> PySpy:
    return PySpy(bench)


def _frame(frame: str) -> tuple[str, str]:
    """(function, shortened file) of one py-spy frame."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    file = match["file"]
    for marker in ("site-packages/", "/lib/python3", "/consumer/"):
        if marker in file:
            file = ("consumer/" if marker == "/consumer/" else "") + file.split(marker, 1)[1]
            break
    return match["function"], file


def _package(file: str) -> str:
    if file.startswith("consumer/"):
        return file
    if file.startswith(".") and "/" in file:  # the standard library: "3.11/asyncio/events.py"
        return file.split("/", 2)[1] if file.count("/") > 1 else file
    return file.split("/", 1)[0]


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
    """`python -m bench.profiling FILE`: the summary of a raw py-spy file, as a table."""
    result = summarize(Path(sys.argv[1]))
    print(f"{result['samples']} samples")
    for title in ("self_percent", "inclusive_percent", "by_file_self_percent"):
        print(f"\n{title}:")
        for name, percent in result[title]:
            print(f"  {percent:5.1f}%  {name}")


if __name__ == "__main__":
    main()
