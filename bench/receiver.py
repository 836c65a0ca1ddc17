"""The Go receiver (`bench/receiver/main.go`): built once into .cache/, run as its own process."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .paths import CACHE, HERE, ROOT

SOURCE = HERE / "receiver"


def build() -> Path:
    """The receiver binary, rebuilt only when its source changed."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE.glob("*")):
        digest.update(path.name.encode() + path.read_bytes())
    binary = CACHE / f"receiver-{digest.hexdigest()[:12]}"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        # deploy/local/go: the Go on PATH when recent enough, else a pinned one it fetches.
        go = [str(ROOT / "deploy" / "local" / "go")]
        subprocess.run([*go, "build", "-trimpath", "-o", str(binary), "."], cwd=SOURCE, check=True)
    return binary


@dataclass(frozen=True, slots=True)
class PathStats:
    statuses: Mapping[str, int]  # "200" -> count; "0" counts requests never answered
    unique_ok: int  # distinct delivery ids answered 2xx
    first_ns: int
    last_ns: int

    def count(self, status: int | None = None) -> int:
        if status is None:
            return sum(self.statuses.values())
        return self.statuses.get(str(status), 0)


class GoReceiver:
    def __init__(
        self,
        secrets: Mapping[str, str],
        hang: Iterable[str] = (),
        status: Mapping[str, int] | None = None,
    ) -> None:
        self._secrets = dict(secrets)  # path -> key
        self._hang = list(hang)
        self._status = dict(status or {})
        self.process: asyncio.subprocess.Process | None = None
        self.base = ""
        self._session: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    async def start(self) -> None:
        binary = build()
        args = [str(binary)]
        if self._hang:
            args += ["-hang", ",".join(self._hang)]
        if self._status:
            args += ["-status", ",".join(f"{p}={c}" for p, c in self._status.items())]
        if self._secrets:
            args += ["-secret", ",".join(f"{p}={k}" for p, k in self._secrets.items())]
        self.process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        assert self.process.stdout is not None
        line = (await asyncio.wait_for(self.process.stdout.readline(), 30)).decode()
        if not line.startswith("listening "):
            raise RuntimeError(f"the Go receiver did not start: {line!r}")
        self.base = "http://" + line.split()[1]
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()

    async def stats(self) -> dict[str, PathStats]:
        assert self._session is not None
        async with self._session.get(self.url("/_stats")) as response:
            data = await response.json()
        return {
            path: PathStats(item["statuses"], item["unique_ok"], item["first_ns"], item["last_ns"])
            for path, item in data.items()
        }

    async def receipts(self) -> list[tuple[str, str, int]]:
        """(path, delivery id, receipt Unix ns) of every request so far."""
        assert self._session is not None
        async with self._session.get(self.url("/_receipts")) as response:
            text = await response.text()
        out = []
        for line in text.splitlines():
            path, delivery, at = line.split("\t")
            out.append((path, delivery, int(at)))
        return out

    async def reset(self) -> None:
        assert self._session is not None
        async with self._session.post(self.url("/_reset")) as response:
            response.raise_for_status()
