"""Presentation of `dlq stats` and `dlq replay`: tables, progress bar, interrupt handling."""

from __future__ import annotations

import argparse
import asyncio
import signal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import ServiceConfig
from .deadletter import DeadLetter
from .dlq import Filters, parse_time, replay, stats


async def dlq_stats(config: ServiceConfig) -> int:
    rows = await stats(config)
    table = Table(title=f"dead letters in {config.kafka.dead_letter_topic}")
    for column in ("channel", "reason", "count", "oldest", "newest"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for (channel, reason), row in sorted(rows.items()):
        table.add_row(channel, reason, str(row.count), _iso(row.oldest), _iso(row.newest))
    Console(highlight=False).print(table)
    print(f"total {sum(r.count for r in rows.values())}")
    return 0


async def dlq_replay(config: ServiceConfig, args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    try:
        filters = Filters(
            channel=args.channel,
            reason=args.reason,
            since=parse_time(args.since) if args.since else None,
            until=parse_time(args.until) if args.until else None,
        )
    except ValueError as exc:
        err.print(f"dlq replay: {exc}", markup=False)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    out = Console(highlight=False)
    listing = Table(title="would replay (dry run)") if args.dry_run else None
    if listing is not None:
        for column in ("delivery id", "channel", "reason", "attempts", "dead-lettered at"):
            listing.add_column(column)

    def listed(letter: DeadLetter) -> None:
        if listing is not None:
            status = f"/{letter.reason.status}" if letter.reason.status else ""
            listing.add_row(
                letter.delivery_id or "-",
                letter.channel or "-",
                letter.reason.kind + status,
                str(letter.attempts),
                _iso(letter.dead_lettered_at),
            )

    with Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("scan", total=None)
        report = await replay(
            config,
            filters,
            limit=args.limit,
            dry_run=args.dry_run,
            stop=stop,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            on_match=listed,
        )
    if listing is not None:
        out.print(listing)
    verb = "would replay" if args.dry_run else "replayed"
    count = report.matched if args.dry_run else report.replayed
    out.print(
        f"{verb} {count} of {report.matched} matching dead letters "
        f"({report.scanned} scanned, {report.skipped} not replayable)"
    )
    if report.interrupted:
        out.print("interrupted: progress is saved; run the same command again to resume")
    return 0


def _iso(when: object) -> str:
    return "-" if when is None else str(when)
