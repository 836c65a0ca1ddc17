"""Every line, ours or a library's, in one shape; secrets never; reconfigurable in one process."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest
import structlog

from consumer.logs import configure_logging
from consumer.secrets import REDACTED, Secret

log = structlog.get_logger("consumer.test_logs")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    yield
    configure_logging()  # back to the defaults, on whatever stderr is


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_our_lines_and_every_librarys_have_one_json_shape() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log.info("ours", partitions=3)
    logging.getLogger("aiohttp.client").warning("theirs %s", "formatted")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    ours, theirs, warned = lines(out)
    assert {k: ours[k] for k in ("event", "level", "logger", "partitions")} == {
        "event": "ours",
        "level": "info",
        "logger": "consumer.test_logs",
        "partitions": 3,
    }
    assert {k: theirs[k] for k in ("event", "level", "logger")} == {
        "event": "theirs formatted",
        "level": "warning",
        "logger": "aiohttp.client",
    }
    assert warned["logger"] == "py.warnings"
    assert "deprecated thing" in str(warned["event"])
    assert all(str(line["timestamp"]).endswith("Z") for line in (ours, theirs, warned))


def test_auto_is_json_unless_a_person_watches_the_terminal() -> None:
    piped, terminal = io.StringIO(), Terminal()
    configure_logging("info", "auto", stream=piped)
    log.info("to a file")
    configure_logging("info", "auto", stream=terminal)
    log.info("to a person")
    assert lines(piped)[0]["event"] == "to a file"
    text = terminal.getvalue()
    assert "to a person" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_no_known_secret_reaches_the_output_whoever_logs_it() -> None:
    secret = Secret("library-leak-s3cr3t-4471")
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("aiokafka.conn").warning("SASL failed for %s", secret.reveal())
    try:
        raise RuntimeError(f"bad token {secret.reveal()}")
    except RuntimeError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
        log.exception("ours.crashed", detail=secret.reveal())
    text = out.getvalue()
    assert secret.reveal() not in text
    assert text.count(REDACTED) >= 4  # message, library traceback, our field, our traceback
    assert len(lines(out)) == 3  # a traceback stays inside its JSON line


def test_reconfiguring_applies_to_loggers_already_in_use() -> None:
    first, second, third = io.StringIO(), io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    log.info("one")  # the logger is assembled and cached here
    configure_logging("warning", "json", stream=second)
    log.info("hidden now")
    log.warning("two")
    configure_logging("debug", "console", stream=third)
    log.debug("three")
    assert [line["event"] for line in lines(first)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two"]
    assert "three" in third.getvalue()


def test_default_stream_is_whatever_stderr_is_now() -> None:
    configure_logging("info", "json")
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        log.info("followed")
    assert lines(captured)[0]["event"] == "followed"


def test_library_chatter_and_folded_kafka_errors_show_only_at_debug() -> None:
    quiet, verbose = io.StringIO(), io.StringIO()
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    for level, out in (("info", quiet), ("debug", verbose)):
        configure_logging(level, "json", stream=out)
        fetcher.error("Failed fetch messages from %s: %s", 1, "NodeNotReadyError")
        logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group %s", "g")
    assert quiet.getvalue() == ""
    folded, joined = lines(verbose)
    assert (folded["level"], folded["event"]) == (
        "debug",
        "Failed fetch messages from 1: NodeNotReadyError",
    )
    assert (joined["level"], joined["event"]) == ("info", "Joined group g")
