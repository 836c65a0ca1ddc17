"""Presentation of `dlq stats` and `dlq replay`: tables, progress bar, interrupt handling."""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumer.config import ServiceConfig
from consumer.deadletter import DeadLetter

from . import Request, forget_finished, replay, stats

EXIT_INTERRUPTED = 130  # what a shell reports for a command ended by Ctrl-C

_REFUSALS = {
    "truncated": "stored without their events (too large); re-read them from their sources",
    "channel_not_configured": "their channel is not configured now",
    "not_an_event": "they hold no event to publish again",
    "expired": "past their campaign's expire_after_seconds (--ignore-expiry sends them)",
}


async def dlq_stats(config: ServiceConfig, forget: bool = False) -> int:
    out = Console(highlight=False)
    if forget:
        print(f"forgot {await forget_finished(config)} finished replay(s)")
    result = await stats(config)
    table = Table(title=f"dead letters in {config.kafka.dead_letter_topic}")
    for column in ("channel", "reason", "count", "oldest", "newest"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for (channel, reason), row in sorted(result.rows.items()):
        table.add_row(channel, reason, str(row.count), _iso(row.oldest), _iso(row.newest))
    out.print(table)
    print(f"total {sum(r.count for r in result.rows.values())}")
    if result.replays:
        replays = Table(title="replays (repeat the same command to resume; --reset starts over)")
        for column in ("filters", "window", "replayed", "state", "last run"):
            replays.add_column(column)
        for entry in result.replays:
            window = f"{_iso(entry.filters.since)} .. {_iso(entry.filters.until)}"
            state = "finished" if entry.finished else "unfinished"
            replays.add_row(
                entry.request.describe(), window, str(entry.replayed), state, _iso(entry.updated_at)
            )
        out.print(replays)
    return 0


async def dlq_replay(config: ServiceConfig, args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    request = Request(
        channel=args.channel,
        reason=args.reason,
        since=args.since,
        until=args.until,
        ignore_expiry=args.ignore_expiry,
    )
    try:
        request.resolve(datetime.now(UTC))  # a time that cannot be read is a usage error
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
            request,
            limit=args.limit,
            per_second=args.rate,
            dry_run=args.dry_run,
            reset=args.reset,
            stop=stop,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            on_match=listed,
        )
    if listing is not None:
        out.print(listing)
    if report.resumed and report.progress is not None:
        filters = report.progress.filters
        out.print(
            f"resuming the replay started {_iso(report.progress.updated_at)} for the window "
            f"{_iso(filters.since)} .. {_iso(filters.until)}",
            markup=False,
        )
    verb = "would replay" if args.dry_run else "replayed"
    refused = sum(report.refused.values())
    count = report.matched - refused if args.dry_run else report.replayed
    out.print(
        f"{verb} {count} of {report.matched} matching dead letters "
        f"({report.scanned} scanned, {refused} not replayable)",
        markup=False,
    )
    for why, number in sorted(report.refused.items()):
        out.print(f"  {number} not replayable: {_REFUSALS.get(why, why)}", markup=False)
    if report.interrupted:
        out.print("interrupted: progress is saved; run the same command again to resume")
        return EXIT_INTERRUPTED
    return 0


def _iso(when: datetime | None) -> str:
    return "-" if when is None else when.isoformat(timespec="seconds")
