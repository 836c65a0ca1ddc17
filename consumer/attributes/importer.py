"""Bulk import of user attributes from a JSON-lines file (and the reading `publish` shares)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from consumer.attributes.store import AttributeStore

_MAX_EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class ImportReport:
    imported: int
    rejected: int
    examples: tuple[str, ...]


async def import_jsonl(
    store: AttributeStore, path: Path, *, batch_size: int = 1000, progress: bool = True
) -> ImportReport:
    """Upsert ``{"user_id": ..., "attributes": {...}}`` lines; bad lines are reported, not fatal."""
    lines = JsonLines(path, batch_size=batch_size)
    imported = 0
    async for batch in lines.batches("importing", progress):
        users = [(user_id, attributes) for user_id, attributes in batch if attributes is not None]
        await store.put_many(users)
        imported += len(users)
    return ImportReport(imported=imported, rejected=lines.rejected, examples=tuple(lines.examples))


class JsonLines:
    """A JSON-lines file of users read in batches, with a progress bar; bad lines are counted
    and the first few kept as examples. With `tombstones`, `"attributes": null` is a user to
    delete."""

    def __init__(self, path: Path, *, batch_size: int = 1000, tombstones: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._path = path
        self._batch_size = batch_size
        self._tombstones = tombstones
        self.rejected = 0
        self.examples: list[str] = []

    async def batches(
        self, verb: str, progress: bool
    ) -> AsyncIterator[list[tuple[str, dict[str, Any] | None]]]:
        line_no = 0
        bar = Progress(
            TextColumn(f"[bold]{verb} {{task.description}}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            disable=not progress,
        )
        fh, size = await asyncio.to_thread(_open, self._path)
        with bar, fh:
            task = bar.add_task(escape(self._path.name), total=size)
            while True:
                # Read in a worker thread so a large file never stalls the event loop.
                lines = await asyncio.to_thread(list, itertools.islice(fh, self._batch_size))
                if not lines:
                    break
                batch: list[tuple[str, dict[str, Any] | None]] = []
                for line in lines:
                    line_no += 1
                    parsed = parse_line(line, self._tombstones)
                    if isinstance(parsed, tuple):
                        batch.append(parsed)
                    elif parsed is not None:
                        self.rejected += 1
                        if len(self.examples) < _MAX_EXAMPLES:
                            self.examples.append(f"line {line_no}: {parsed}")
                yield batch
                bar.advance(task, sum(map(len, lines)))


def _open(path: Path) -> tuple[BinaryIO, int]:
    fh = path.open("rb")
    return fh, os.fstat(fh.fileno()).st_size


def parse_line(
    line: bytes, tombstones: bool = False
) -> tuple[str, dict[str, Any] | None] | str | None:
    """Return ``(user_id, attributes)``, a rejection reason, or None for a blank line.
    With `tombstones`, ``"attributes": null`` is a user to delete (attributes None)."""
    if not line.strip():
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON ({exc})"
    if not isinstance(record, dict):
        return "expected a JSON object"
    user_id = record.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        return "user_id missing or not a non-empty string"
    attributes = record.get("attributes", ...)
    if tombstones and attributes is None:
        return user_id, None
    if not isinstance(attributes, dict):
        expected = "a JSON object or null" if tombstones else "a JSON object"
        return f"attributes missing or not {expected}"
    return user_id, attributes
