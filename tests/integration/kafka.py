"""Where integration tests find Kafka: env var, else testcontainers, else deploy/local."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCAL_KAFKA = REPO / "deploy" / "local" / "kafka"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return probe.returncode == 0


@contextmanager
def kafka_broker() -> Iterator[str]:
    """Yield a bootstrap address; stop only what this function started."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer  # only needed where Docker runs

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    already_running = subprocess.run([LOCAL_KAFKA, "status"], capture_output=True, check=False)
    started = subprocess.run(
        [LOCAL_KAFKA, "start"], capture_output=True, text=True, timeout=600, check=False
    )
    if started.returncode != 0:
        raise RuntimeError(f"deploy/local/kafka start failed:\n{started.stderr}")
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        if already_running.returncode != 0:
            subprocess.run([LOCAL_KAFKA, "stop"], capture_output=True, check=False)
