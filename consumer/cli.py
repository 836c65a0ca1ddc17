"""`webhook-consumer` command line. Exit status: 0 success, 1 runtime failure, 2 usage/config."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from .config import ConfigError, ServiceConfig, load_config
from .logs import FORMATS, LEVELS, configure_logging
from .secrets import redact
from .version import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
LOG_LEVEL_ENV = "WEBHOOK_CONSUMER_LOG_LEVEL"
LOG_FORMAT_ENV = "WEBHOOK_CONSUMER_LOG_FORMAT"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webhook-consumer",
        description="Kafka threshold events in, signed GrowingIO-compatible webhooks out.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    return parser


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


def _stopped_before_start(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)  # nothing taken yet, nothing to hand off


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        # Until the service installs its own handlers: a pod stopped while it starts exits 0
        # at once instead of being killed by the default handler.
        signal.signal(signal.SIGTERM, _stopped_before_start)
    err = Console(stderr=True, highlight=False)
    try:
        return _dispatch(args, err)
    except ConfigError as exc:
        err.print(f"[bold red]configuration rejected[/] ({len(exc.problems)} problem(s)):")
        for problem in exc.problems:  # plain print: one greppable line per problem, never wrapped
            print(f"  {exc.source}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as exc:  # a runtime failure: one clear line, the traceback only on request
        print(f"webhook-consumer: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        if os.environ.get("WEBHOOK_CONSUMER_TRACEBACK"):
            raise
        return EXIT_FAILURE


def _config(args: argparse.Namespace) -> ServiceConfig:
    if not args.config:
        raise ConfigError("(no file)", ["--config is required (or set WEBHOOK_CONSUMER_CONFIG)"])
    # dlq and channels commands never sign a request: they run where the webhook secrets are
    # not given.
    return load_config(args.config, webhook_secrets=args.command not in ("dlq", "channels"))


def _log_settings(args: argparse.Namespace, level: str, fmt: str) -> tuple[str, str]:
    """Level and format: flag, else environment, else the given (config or command) default."""
    problems = []
    settings = []
    for flag, env, allowed, default in (
        (args.log_level, LOG_LEVEL_ENV, tuple(LEVELS), level),
        (args.log_format, LOG_FORMAT_ENV, FORMATS, fmt),
    ):
        value = flag or os.environ.get(env) or default
        if value not in allowed:  # only the environment can hold a bad value here
            problems.append(f"{env}: expected one of {', '.join(allowed)}, got {value!r}")
        settings.append(value)
    if problems:
        raise ConfigError("(environment)", problems)
    return settings[0], settings[1]


def _dispatch(args: argparse.Namespace, err: Console) -> int:
    if args.command == "schemas":
        from .schemas import write_docs, write_schemas

        for path in [*write_schemas(args.out), *write_docs(args.docs)]:
            print(path)
        return EXIT_OK
    if args.command == "demo":
        from .demo import run_demo

        configure_logging(*_log_settings(args, "warning", "console"))
        return asyncio.run(run_demo(args.bootstrap_servers, args.events, args.redis_url))
    if args.command == "receiver":
        from .receiver_server import serve_receiver

        configure_logging("info", args.log_format)
        asyncio.run(serve_receiver(args.host, args.port, os.environ))
        return EXIT_OK
    config = _config(args)
    configure_logging(*_log_settings(args, config.logging.level, config.logging.format))
    if args.command == "check-config":
        from .catalog import Catalog

        catalog = Catalog.from_config(config)
        print(
            f"{args.config}: ok ({len(catalog.channels)} channels, {len(catalog.routes)} campaigns)"
        )
        return EXIT_OK
    if args.command == "run":
        return _run(config, args.config, args.workers)
    if args.command == "send-test":
        return asyncio.run(_send_test(config, args.channel, args.campaign, args.user))
    if args.command == "dlq":
        from .dlq.commands import dlq_replay, dlq_stats

        if args.dlq_command == "stats":
            return asyncio.run(dlq_stats(config, args.forget_finished))
        return asyncio.run(dlq_replay(config, args))
    if args.command == "channels":
        return asyncio.run(_channels(config, args))
    if args.command == "attributes":
        if args.attr_command == "publish":
            return asyncio.run(_publish_attributes(config, args.file, args.config))
        return asyncio.run(_import_attributes(config, args.file))
    raise AssertionError(args.command)


# Collect the young generation every 50,000 net allocations instead of 700, and a full
# collection every 100 middle ones instead of 10: the service allocates a few objects per
# delivery that die young, and its start-up objects (modules, config, pools) never die.
# Measured with `make bench`: S1 6,770 -> 7,740-8,300 deliveries/s, S4 (two broken channels)
# 3,600-3,700 -> 4,600-4,700 healthy deliveries/s, for about 19 MiB more peak RSS.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Freeze what start-up built (no collection walks it again) and collect less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run_fast(main: Coroutine[Any, Any, None]) -> None:
    """Run the service on uvloop where it is installed (asyncio's own loop otherwise), with the
    collector tuned for it."""
    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without it
        asyncio.run(main)
    else:
        uvloop.run(main)


def _run(config: ServiceConfig, config_path: str, workers: int) -> int:
    import structlog

    from .service import run_service
    from .supervisor import Supervisor, child_setup, worker_command, worker_identity

    if workers > 1:
        supervisor = Supervisor(
            worker_command(config_path),
            workers,
            stop_timeout=config.kafka.shutdown_grace_seconds + 30,
        )
        return asyncio.run(supervisor.run())
    identity = worker_identity()
    admin_port = None
    if identity is not None:
        structlog.contextvars.bind_contextvars(worker=identity.index)
        if config.admin.port:  # each worker its own port: 9108, 9109, ...
            admin_port = config.admin.port + identity.index
    _run_fast(
        run_service(
            config, config_path=config_path, admin_port=admin_port, on_started=child_setup()
        )
    )
    return EXIT_OK


async def _send_test(
    config: ServiceConfig, channel_name: str, campaign: str | None, users: list[str]
) -> int:
    from .attributes import open_store
    from .catalog import Catalog
    from .delivery import Delivery, delivery_id
    from .outcome import Kind
    from .sender import Sender
    from .transport.backends import open_transport

    catalog = Catalog.from_config(config)
    channel = catalog.channels.get(channel_name)
    if channel is None:
        print(f"unknown channel {channel_name!r}; expected one of: {', '.join(catalog.channels)}")
        return EXIT_USAGE
    template_param: dict[str, object] = {}
    if campaign is not None:
        route = next((r for r in catalog.routes.get(campaign, ()) if r.channel is channel), None)
        if route is None:
            print(f"campaign {campaign!r} does not send to channel {channel_name!r}")
            return EXIT_USAGE
        template_param = dict(route.template_param)
    found = {}
    if users:
        store = open_store(config.attributes)
        try:
            found = await store.get_many(users)
        finally:
            await store.close()
    user_attr = [
        {k: found[u][k] for k in channel.user_attributes if k in found[u]}
        for u in users
        if u in found
    ]
    test_id = f"send-test-{time.time_ns()}"
    delivery = Delivery(
        id=delivery_id(channel.name, [test_id]),
        channel=channel,
        campaign_id=campaign or "",
        template_param=template_param,
        user_attr=user_attr,
        events=[],
        sources=[],
        attempts=1,
    )
    transport = open_transport(config.http, config.allowed_networks)
    try:
        sender = Sender(transport)
        body, headers = sender.prepare(delivery)
        started = time.perf_counter()
        outcome = await sender.post(delivery, body, headers)
        latency_ms = (time.perf_counter() - started) * 1000
    finally:
        await transport.close()
    # Plain print, not rich: the body must come out on one line, byte for byte, whatever the
    # terminal (rich wraps at its width, 80 columns when piped).
    print(f"POST {channel.url}")
    print(f"delivery id  {delivery.id}")
    print(f"signature    {headers['X-gio-signature']}")
    print(f"body         {body.decode()}")
    if outcome.kind is Kind.BLOCKED_DESTINATION:
        print(f"blocked      {outcome.message}")
        print("             nothing was sent (see allowed_networks)")
        return EXIT_FAILURE
    status = outcome.status if outcome.status is not None else outcome.kind.value
    print(f"status       {status}  ({latency_ms:.0f} ms)")
    print(f"response     {outcome.message[:300]}")
    return EXIT_OK if outcome.ok else EXIT_FAILURE


async def _channels(config: ServiceConfig, args: argparse.Namespace) -> int:
    from .channels import commands

    match args.channels_command:
        case "list":
            return await commands.channels_list(config)
        case "disable":
            return await commands.channels_disable(config, args.name, args.reason)
        case "enable":
            return await commands.channels_enable(config, args.name, args.reason)
        case _:
            return await commands.channels_reset_circuit(config, args.name)


async def _import_attributes(config: ServiceConfig, file: Path) -> int:
    from .attributes import import_jsonl, open_store

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


async def _publish_attributes(config: ServiceConfig, file: Path, source: str) -> int:
    from .attributes.publisher import publish_jsonl

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
