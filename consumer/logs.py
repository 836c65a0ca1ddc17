"""Logging set-up: every line, ours and the libraries', in one shape on stderr.

structlog loggers hand their event dicts to the standard `logging` module, and one handler
renders everything (aiokafka, asyncio and aiohttp records included) with structlog's
`ProcessorFormatter`: JSON lines for machines, a console renderer for people. `redact_event`
runs last before rendering, so no known secret reaches the output whoever logged it.

The structlog side never changes after the first call; level, format and stream live in the
standard library's handler and levels. So `configure_logging` can be called again in one
process (tests do), and loggers cached on first use follow the new settings.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, TextIO

import structlog

from .kafka_health import kafka_health
from .secrets import redact_event

LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS: Final = ("auto", "json", "console")
OWN_LOGGER: Final = "consumer"
# aiokafka logs at info the one line that proves a broker answers again ("Discovered
# coordinator"): kafka_health must see it at every level. Below the floor it goes no further.
_KAFKA_LOGGER: Final = "aiokafka"

_SHARED: Final[list[structlog.types.Processor]] = [  # ours and the libraries' records
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class _FastLevelLogger(structlog.stdlib.BoundLogger):
    """A disabled level costs one cached stdlib lookup, not a trip through the processors
    (measured: about 1 us a call instead of 5)."""

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return super().debug(event, *args, **kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.INFO):
            return None
        return super().info(event, *args, **kw)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time, like `logging.lastResort`, so a test
    that swaps stderr neither loses lines nor leaves a closed stream behind."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class _LibraryFloor(logging.Filter):
    """Other libraries' records below `level` are dropped; ours were filtered when made."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        own = name == OWN_LOGGER or name.startswith(f"{OWN_LOGGER}.")
        return own or record.levelno >= self.level


_handler: logging.Handler | None = None  # ours on the root logger, replaced on each call


def _renders_json(fmt: str, stream: TextIO) -> bool:
    """`auto`: JSON unless a person is watching the terminal."""
    return fmt == "json" or (fmt == "auto" and not stream.isatty())


# Loggers bind their processors on first use, which saves a lookup per line. A process that
# configures logging more than once (the test suite: check-config, then capture_logs) turns it off.
cache_loggers = True


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Send every log line to `stream` (default: the current `sys.stderr`) in one format.

    Our loggers log at `level`; other libraries at warning and above, and at `debug` their
    info lines too (their own debug lines are per request, too many to read). Repeated aiokafka
    connection errors are folded into `kafka.unreachable` / `kafka.recovered` by `kafka_health`
    and shown at debug.
    """
    global _handler
    threshold = LEVELS[level]
    debug = threshold == logging.DEBUG
    library_threshold = logging.INFO if debug else max(threshold, logging.WARNING)
    out = stream if stream is not None else sys.stderr
    use_json = _renders_json(fmt, out)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=_FastLevelLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=cache_loggers,
    )
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,  # tracebacks are redacted too
                redact_event,  # the last line of defence: no known secret reaches the output
                renderer,
            ],
        )
    )
    handler.addFilter(kafka_health)  # before the floor: it re-levels what it folds to debug
    # At debug, library lines kafka_health re-levelled to debug pass too.
    handler.addFilter(_LibraryFloor(logging.DEBUG if debug else library_threshold))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    root.setLevel(library_threshold)
    logging.getLogger(OWN_LOGGER).setLevel(threshold)
    logging.getLogger(_KAFKA_LOGGER).setLevel(logging.INFO)
    # warnings.warn() lines take the same shape. Re-armed on every call: code that saved and
    # restored `warnings.showwarning` since the last call (pytest does) undid the capture.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
