"""`webhook-consumer` command line. Exit status: 0 success, 1 runtime failure, 2 usage/config.

The grammar is `arguments.py`; each command's work lives beside what it works on (`running`,
`send_test`, `dlq/commands`, `channels/commands`, `attributes/commands`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from rich.console import Console

from .arguments import LOG_FORMAT_ENV, LOG_LEVEL_ENV, parser
from .config import ConfigError, ServiceConfig, load_config
from .logs import FORMATS, LEVELS, configure_logging
from .secrets import redact

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _stopped_before_start(signum: int, frame: object) -> None:
    raise SystemExit(EXIT_OK)  # nothing taken yet, nothing to hand off


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
        from .running import run

        return run(config, args.config, args.workers)
    if args.command == "send-test":
        from .send_test import send_test

        return asyncio.run(send_test(config, args.channel, args.campaign, args.user))
    if args.command == "dlq":
        from .dlq.commands import dlq_replay, dlq_stats

        if args.dlq_command == "stats":
            return asyncio.run(dlq_stats(config, args.forget_finished))
        return asyncio.run(dlq_replay(config, args))
    if args.command == "channels":
        return asyncio.run(_channels(config, args))
    if args.command == "attributes":
        from .attributes.commands import import_attributes, publish_attributes

        if args.attr_command == "publish":
            return asyncio.run(publish_attributes(config, args.file, args.config))
        return asyncio.run(import_attributes(config, args.file))
    raise AssertionError(args.command)


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
