"""CPU seconds and peak memory of a process tree, read from /proc (Linux)."""

from __future__ import annotations

import bisect
import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class _Stat:
    ppid: int
    own: float  # utime + stime of the process, all threads, in seconds
    reaped: float  # cutime + cstime: children it has already waited for


def _stat(pid: int) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"
    # fields[0] is the state (field 3 of proc(5)); utime is field 14, so fields[11].
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return _Stat(int(fields[1]), (utime + stime) / _TICKS, (cutime + cstime) / _TICKS)


def _peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """`root` and every live process below it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)] = stat.ppid
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree.extend(frontier)
    return tree


class TreeMeter:
    """Samples a process tree: CPU seconds so far, and each process's peak RSS (VmHWM).

    CPU = the live processes' own utime+stime plus the root's cutime+cstime (children it has
    reaped), so a worker that ended and was waited for is still counted, and never twice.
    Sample often enough that no process ends unseen between two samples without being reaped.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.cpu_seconds = 0.0
        self._peaks: dict[int, int] = {}  # pid -> VmHWM KiB, the highest seen
        self._times: list[int] = []  # Unix ns of each sample
        self._cpu: list[float] = []  # CPU seconds at each sample

    def sample(self) -> float:
        root = _stat(self.root)
        if root is None:  # ended: keep the last figures
            return self.cpu_seconds
        total = root.reaped
        for pid in descendants(self.root):
            stat = _stat(pid)
            if stat is not None:
                total += stat.own
                self._peaks[pid] = max(self._peaks.get(pid, 0), _peak_rss_kib(pid))
        self.cpu_seconds = max(self.cpu_seconds, total)
        self._times.append(time.time_ns())
        self._cpu.append(self.cpu_seconds)
        return self.cpu_seconds

    def cpu_at(self, unix_ns: int) -> float:
        """CPU seconds at a moment between samples, interpolated linearly: a window that
        starts at a receiver's timestamp need not wait for the next sample."""
        i = bisect.bisect_left(self._times, unix_ns)
        if i == 0:
            return self._cpu[0] if self._cpu else 0.0
        if i == len(self._times):
            return self._cpu[-1]
        t0, t1 = self._times[i - 1], self._times[i]
        c0, c1 = self._cpu[i - 1], self._cpu[i]
        return c0 + (c1 - c0) * (unix_ns - t0) / (t1 - t0)

    @property
    def peak_rss_mib(self) -> float:
        """Sum over the tree's processes of each one's peak: an upper bound of the tree's."""
        return sum(self._peaks.values()) / 1024

    @property
    def processes(self) -> int:
        return len(self._peaks)
