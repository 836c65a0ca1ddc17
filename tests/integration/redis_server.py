"""Where integration tests find Redis: $REDIS_URL, else deploy/local/redis."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCAL_REDIS = Path(__file__).resolve().parents[2] / "deploy" / "local" / "redis"


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield a Redis URL; stop only what this function started."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    already_running = subprocess.run([LOCAL_REDIS, "status"], capture_output=True, check=False)
    started = subprocess.run(
        [LOCAL_REDIS, "start"], capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        raise RuntimeError(f"deploy/local/redis start failed:\n{started.stderr}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        if already_running.returncode != 0:
            subprocess.run([LOCAL_REDIS, "stop"], capture_output=True, check=False)
