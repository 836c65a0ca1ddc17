"""`webhook-consumer attributes import|publish`: a JSON-lines file into the store or the topic."""

from __future__ import annotations

import sys
from pathlib import Path

from consumer.config import ConfigError, ServiceConfig

from .backends import open_store
from .importer import import_jsonl
from .publisher import publish_jsonl

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


async def import_attributes(config: ServiceConfig, file: Path) -> int:
    if not file.is_file():  # noqa: ASYNC240 - one stat before any work starts
        print(f"{file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    store = open_store(config.attributes)
    try:
        report = await import_jsonl(store, file, progress=True)
    finally:
        await store.close()
    print(f"imported {report.imported} users, rejected {report.rejected} lines")
    for example in report.examples:
        print(f"  {example}", file=sys.stderr)
    return EXIT_OK if report.rejected == 0 else EXIT_FAILURE


async def publish_attributes(config: ServiceConfig, file: Path, source: str) -> int:
    if config.attributes.topic is None:
        raise ConfigError(source, ["attributes.topic: required by attributes publish, got none"])
    if not file.is_file():  # noqa: ASYNC240 - one stat before any work starts
        print(f"{file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    report = await publish_jsonl(config, file, progress=True)
    print(
        f"published {report.published} users to {config.attributes.topic} "
        f"({report.deleted} deletions), rejected {report.rejected} lines"
    )
    for example in report.examples:
        print(f"  {example}", file=sys.stderr)
    return EXIT_OK if report.rejected == 0 else EXIT_FAILURE
