"""`webhook-consumer channels list|disable|enable|reset-circuit`: the channel-state topic, read
and written by an operator. Running replicas act on a change within a few seconds."""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from consumer.config import ChannelConfig, ServiceConfig
from consumer.kafkaprobe import probe

from .records import ChannelRecord, RecordKind
from .state import ChannelState
from .topic import read_state, write_record

EXIT_OK, EXIT_USAGE = 0, 2


def operator() -> str:
    """Who runs the command, as `channels list` shows it: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def channels_list(config: ServiceConfig) -> int:
    await probe(config.kafka)
    state = await read_state(config)
    table = Table(title=f"channels of {config.kafka.group_id} ({config.kafka.channels_topic})")
    for column in ("channel", "state", "circuit", "limit", "last error", "disabled or enabled"):
        table.add_column(column)
    names = [c.name for c in config.channels]
    # Then channels the topic names that the config does not (removed while disabled, say).
    for name in [*names, *(n for n in state.known_channels() if n not in names)]:
        channel = next((c for c in config.channels if c.name == name), None)
        record = state.state_of(name)
        table.add_row(
            name,
            _state(state, name, channel),
            _circuit(state, name),
            "-" if channel is None else _limit(channel),
            _last_error(state, name),
            _change(record),
        )
    Console(highlight=False, width=200).print(table)
    return EXIT_OK


async def _record_state(config: ServiceConfig, name: str, disabled: bool, reason: str) -> None:
    """The operator's change, on the channels topic every replica follows."""
    record = ChannelRecord(
        kind=RecordKind.STATE, channel=name, by=operator(), disabled=disabled, reason=reason
    )
    await write_record(config, record)


async def channels_disable(config: ServiceConfig, name: str, reason: str | None) -> int:
    if not _configured(config, name):
        return EXIT_USAGE
    await probe(config.kafka)
    await _record_state(config, name, True, reason or "disabled by an operator")
    print(f"disabled {name}: running replicas stop sending to it within 5 s;")
    print("its deliveries become dead letters with reason channel_disabled until it is enabled")
    return EXIT_OK


async def channels_enable(config: ServiceConfig, name: str, reason: str | None) -> int:
    await probe(config.kafka)
    state = await read_state(config)
    before = state.disabled(name)
    if before is None and not _configured(config, name):
        return EXIT_USAGE
    await _record_state(config, name, False, reason or "enabled by an operator")
    print(f"enabled {name}: running replicas send to it again within 5 s")
    if before is not None:
        since = before.at.astimezone(UTC).isoformat(timespec="seconds")
        print("to send what was held back while it was disabled:")
        print(
            f"  webhook-consumer dlq replay --config CONFIG --channel {name} "
            f"--reason channel_disabled --since {since}"
        )
    return EXIT_OK


async def channels_reset_circuit(config: ServiceConfig, name: str) -> int:
    if not _configured(config, name):
        return EXIT_USAGE
    await probe(config.kafka)
    await write_record(
        config, ChannelRecord(kind=RecordKind.CIRCUIT_RESET, channel=name, by=operator())
    )
    print(f"circuit of {name} reset: running replicas close it within 5 s")
    return EXIT_OK


def _configured(config: ServiceConfig, name: str) -> bool:
    if any(c.name == name for c in config.channels):
        return True
    known = ", ".join(c.name for c in config.channels)
    print(f"unknown channel {name!r}; expected one of: {known}")
    return False


def _state(state: ChannelState, name: str, channel: ChannelConfig | None) -> str:
    disabled = "disabled" if state.disabled(name) is not None else "enabled"
    return disabled if channel is not None else f"{disabled} (not configured)"


def _circuit(state: ChannelState, name: str) -> str:
    reports = [r for r in state.circuits.values() if r.channel == name]
    if not reports:
        return "closed"
    opened = [r for r in reports if r.circuit != "closed"]
    if not opened:
        return "closed"
    worst = "open" if any(r.circuit == "open" for r in opened) else "half_open"
    return f"{worst} on {len(opened)} of {len(reports)} replicas reporting"


def _last_error(state: ChannelState, name: str) -> str:
    reports = [r for r in state.circuits.values() if r.channel == name and r.last_error]
    disabled = state.disabled(name)
    if disabled is not None and disabled.status is not None:
        return f"http_status {disabled.status} at {_when(disabled.at)}"
    if not reports:
        return "-"
    latest = max(reports, key=lambda r: r.at)
    error = latest.last_error
    assert error is not None
    status = "" if error.status is None else f" {error.status}"
    return f"{error.kind}{status} at {_when(latest.at)}: {error.message[:80]}"


def _limit(channel: ChannelConfig) -> str:
    rate = channel.rate_limit
    paced = "no rate limit" if rate is None else f"{rate.per_second:g}/s burst {rate.capacity}"
    return f"{paced}, {channel.max_concurrency} at once"


def _change(record: ChannelRecord | None) -> str:
    if record is None:
        return "-"
    verb = "disabled" if record.disabled else "enabled"
    return f"{verb} by {record.by} at {_when(record.at)}: {record.reason}"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds")
