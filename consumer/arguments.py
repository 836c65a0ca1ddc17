"""The `webhook-consumer` command line's grammar: every command, its options and their help."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .logs import FORMATS, LEVELS
from .version import __version__

LOG_LEVEL_ENV = "WEBHOOK_CONSUMER_LOG_LEVEL"
LOG_FORMAT_ENV = "WEBHOOK_CONSUMER_LOG_FORMAT"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="webhook-consumer",
        description="Kafka threshold events in, signed GrowingIO-compatible webhooks out.",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _config_options(sub)
        return sub

    run = with_config("run", "consume and deliver until SIGTERM/SIGINT")
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="group members to run, each in its own process under this one (default 1: "
        "this process alone)",
    )
    with_config("check-config", "validate the config; exit 0, or 2 listing every problem")
    send = with_config("send-test", "send one real, signed test request to a channel")
    send.add_argument("channel")
    send.add_argument("--campaign", help="take template parameters from this campaign")
    send.add_argument("--user", action="append", default=[], help="include this user's attributes")
    dlq = commands.add_parser("dlq", help="inspect and replay dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for name, text in (
        ("stats", "counts of dead letters by channel and reason"),
        ("replay", "re-deliver matching dead letters, keeping their ids"),
    ):
        _config_options(dlq_commands.add_parser(name, help=text, description=text))
    replay = dlq_commands.choices["replay"]
    replay.add_argument("--channel")
    replay.add_argument("--reason", help="reason kind, e.g. http_status, timeout")
    replay.add_argument("--since", help="ISO 8601 time or an age like 2h")
    replay.add_argument("--until", help="ISO 8601 time or an age like 30m")
    replay.add_argument(
        "--reset", action="store_true", help="forget this replay's progress and start over"
    )
    dlq_commands.choices["stats"].add_argument(
        "--forget-finished",
        action="store_true",
        help="remove the progress of finished replays (their commands then start over)",
    )
    replay.add_argument("--limit", type=int)
    replay.add_argument(
        "--rate", type=_positive_int, help="send at most this many letters a second"
    )
    replay.add_argument("--dry-run", action="store_true", help="list, send nothing")
    replay.add_argument(
        "--ignore-expiry",
        action="store_true",
        help="send letters past their campaign's expire_after_seconds too (skipped otherwise)",
    )
    channels = commands.add_parser(
        "channels", help="list channels; disable, enable, or reset the circuit of one"
    )
    channel_commands = channels.add_subparsers(
        dest="channels_command", required=True, metavar="ACTION"
    )
    for name, text in (
        ("list", "every channel: state, circuit, limit, last error, who disabled it and why"),
        ("disable", "stop sending to a channel on every replica; its deliveries are dead-lettered"),
        ("enable", "send to a disabled channel again, on every replica"),
        ("reset-circuit", "close a channel's circuit breaker on every replica"),
    ):
        sub = channel_commands.add_parser(name, help=text, description=text)
        _config_options(sub)
        if name != "list":
            sub.add_argument("name", metavar="NAME", help="the channel")
        if name in ("disable", "enable"):
            sub.add_argument("--reason", help="why, shown by `channels list` and the status page")
    attributes = commands.add_parser("attributes", help="manage the user attribute store")
    attr_commands = attributes.add_subparsers(dest="attr_command", required=True, metavar="ACTION")
    importer = attr_commands.add_parser("import", help="load JSON lines of user attributes")
    _config_options(importer)
    importer.add_argument("file", type=Path)
    publisher = attr_commands.add_parser(
        "publish", help="write JSON lines of user attributes to attributes.topic"
    )
    _config_options(publisher)
    publisher.add_argument("file", type=Path)
    demo = commands.add_parser("demo", help="run everything locally and show verified webhooks")
    demo.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="a running Kafka broker (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    demo.add_argument("--events", type=int, default=12, help="events to publish")
    _log_options(demo, "warning, console")
    receiver = commands.add_parser(
        "receiver",
        help="run the reference receiver: verify and log webhooks",
        description="Verify and log webhooks on /hooks/{channel}; secrets from "
        "RECEIVER_SECRET_<CHANNEL> (and RECEIVER_WHSEC_<CHANNEL>) environment variables.",
    )
    receiver.add_argument("--host", default="127.0.0.1", help="address to listen on")
    receiver.add_argument("--port", type=int, default=8080, help="port to listen on (0: any)")
    receiver.add_argument("--log-format", choices=["json", "console"], default="json")
    demo.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or None,
        help="keep the demo's attributes in this Redis (default: $REDIS_URL, else SQLite)",
    )
    schemas = commands.add_parser(
        "schemas", help="write schemas/*.json and docs/configuration.md from the models"
    )
    schemas.add_argument("--out", type=Path, default=Path("schemas"), help="JSON Schema folder")
    schemas.add_argument("--docs", type=Path, default=Path("docs"), help="Markdown folder")
    return root


def _config_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--config",
        default=os.environ.get("WEBHOOK_CONSUMER_CONFIG"),
        help="YAML config file (default: $WEBHOOK_CONSUMER_CONFIG)",
    )
    _log_options(sub, "the config's logging section")


def _log_options(sub: argparse.ArgumentParser, fallback: str) -> None:
    """Flags win over the environment, which wins over `fallback`."""
    sub.add_argument(
        "--log-level",
        choices=list(LEVELS),
        help=f"default: ${LOG_LEVEL_ENV}, else {fallback}",
    )
    sub.add_argument(
        "--log-format",
        choices=FORMATS,
        help=f"auto is JSON unless stderr is a terminal (default: ${LOG_FORMAT_ENV}, else "
        f"{fallback})",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value
