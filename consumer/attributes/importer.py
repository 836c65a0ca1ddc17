"""Bulk import of user attributes from a JSON-lines file."""

from __future__ import annotations

import asyncio
import itertools
import os
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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    imported = rejected = 0
    examples: list[str] = []
    line_no = 0
    bar = Progress(
        TextColumn("[bold]importing {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    )
    fh, size = await asyncio.to_thread(_open, path)
    with bar, fh:
        task = bar.add_task(escape(path.name), total=size)
        while True:
            # Read in a worker thread so a large file never stalls the event loop.
            lines = await asyncio.to_thread(list, itertools.islice(fh, batch_size))
            if not lines:
                break
            batch: list[tuple[str, dict[str, Any]]] = []
            for line in lines:
                line_no += 1
                parsed = _parse(line)
                if isinstance(parsed, tuple):
                    batch.append(parsed)
                elif parsed is not None:
                    rejected += 1
                    if len(examples) < _MAX_EXAMPLES:
                        examples.append(f"line {line_no}: {parsed}")
            await store.put_many(batch)
            imported += len(batch)
            bar.advance(task, sum(map(len, lines)))
    return ImportReport(imported=imported, rejected=rejected, examples=tuple(examples))


def _open(path: Path) -> tuple[BinaryIO, int]:
    fh = path.open("rb")
    return fh, os.fstat(fh.fileno()).st_size


def _parse(line: bytes) -> tuple[str, dict[str, Any]] | str | None:
    """Return ``(user_id, attributes)``, a rejection reason, or None for a blank line."""
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
    attributes = record.get("attributes")
    if not isinstance(attributes, dict):
        return "attributes missing or not a JSON object"
    return user_id, attributes
