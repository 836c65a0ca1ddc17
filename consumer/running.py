"""`webhook-consumer run`: one service on uvloop with the collector tuned, or a supervisor of
several workers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

from .config import ServiceConfig

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


def run(config: ServiceConfig, config_path: str, workers: int) -> int:
    """Until SIGTERM; the exit status."""
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
    return 0
