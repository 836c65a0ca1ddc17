"""--log-level / --log-format beat WEBHOOK_CONSUMER_LOG_*, which beat the config's logging keys."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from consumer.arguments import parser
from consumer.cli import main
from consumer.logs import configure_logging

probe = structlog.get_logger("consumer.probe")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("WEBHOOK_CONSUMER_LOG_LEVEL", "WEBHOOK_CONSUMER_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    yield
    configure_logging()


def check_config(tmp_path: Path, logging: dict[str, str] | None, *flags: str) -> tuple[int, str]:
    """Run check-config, then log like the service would; return its status and what a
    piped stderr received."""
    document: dict[str, Any] = {"channels": [{"name": "a", "url": "https://example.com/"}]}
    if logging is not None:
        document["logging"] = logging
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["check-config", "--config", str(path), *flags])
        probe.info("probe.info")
        probe.warning("probe.warning")
    return status, err.getvalue()


def shape(output: str) -> tuple[str, list[str]]:
    """("json" or "console", the events shown)."""
    lines = output.splitlines()
    try:
        return "json", [json.loads(line)["event"] for line in lines]
    except json.JSONDecodeError:
        return "console", [e for e in ("probe.info", "probe.warning") if e in output]


CASES = {
    "defaults: auto is JSON on a pipe, info": (None, {}, [], "json", True),
    "config": ({"level": "warning", "format": "console"}, {}, [], "console", False),
    "environment over config": (
        {"level": "warning", "format": "console"},
        {"WEBHOOK_CONSUMER_LOG_LEVEL": "info", "WEBHOOK_CONSUMER_LOG_FORMAT": "json"},
        [],
        "json",
        True,
    ),
    "flags over environment": (
        None,
        {"WEBHOOK_CONSUMER_LOG_LEVEL": "info", "WEBHOOK_CONSUMER_LOG_FORMAT": "json"},
        ["--log-level", "warning", "--log-format", "console"],
        "console",
        False,
    ),
    "a flag over a bad environment value": (
        None,
        {"WEBHOOK_CONSUMER_LOG_LEVEL": "loud"},
        ["--log-level", "info"],
        "json",
        True,
    ),
}


@pytest.mark.parametrize(
    ("logging", "env", "flags", "rendered", "info_shown"), CASES.values(), ids=list(CASES)
)
def test_precedence(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logging: dict[str, str] | None,
    env: dict[str, str],
    flags: list[str],
    rendered: str,
    info_shown: bool,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status, output = check_config(tmp_path, logging, *flags)
    assert status == 0, output
    expected = ["probe.info", "probe.warning"] if info_shown else ["probe.warning"]
    assert shape(output) == (rendered, expected)


def test_a_bad_environment_value_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBHOOK_CONSUMER_LOG_FORMAT", "xml")
    status, output = check_config(tmp_path, None)
    assert status == 2
    assert (
        "(environment): WEBHOOK_CONSUMER_LOG_FORMAT: expected one of auto, json, console, got 'xml'"
    ) in output


@pytest.mark.parametrize(
    "command",
    [
        ["run"],
        ["check-config"],
        ["send-test", "a"],
        ["dlq", "stats"],
        ["dlq", "replay"],
        ["attributes", "import", "users.jsonl"],
        ["demo"],
    ],
)
def test_every_command_that_logs_takes_the_flags(command: list[str]) -> None:
    args = parser().parse_args([*command, "--log-level", "debug", "--log-format", "console"])
    assert (args.log_level, args.log_format) == ("debug", "console")
