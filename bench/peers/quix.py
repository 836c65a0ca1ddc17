"""S6b: a Quix Streams application (bench/peers/quix_app.py) in its own virtual env."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..context import CONCURRENCY, Bench, healthy_paths
from ..measure import run_consumer
from ..paths import CACHE, HERE
from ..scenarios import Result, _result, stack
from ..workload import CHANNELS, TEMPLATE, secret

VENV = CACHE / "quix-venv"
REQUIREMENTS = ["quixstreams>=3.20,<4", "aiohttp>=3.11,<4"]
APP = HERE / "peers" / "quix_app.py"


def python() -> Path:
    """The env's interpreter; created, with quixstreams from PyPI, on first use."""
    interpreter = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if not marker.exists() or marker.read_text() != "\n".join(REQUIREMENTS):
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [
                str(interpreter),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *REQUIREMENTS,
            ],
            check=True,
        )
        marker.write_text("\n".join(REQUIREMENTS))
    return interpreter


def _version(interpreter: Path) -> str:
    out = subprocess.run(
        [str(interpreter), "-c", "import quixstreams; print(quixstreams.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


async def scenario(bench: Bench) -> Result:
    interpreter = python()
    topic = bench.topic("mid")
    events = topic.records
    group = f"{bench.prefix}-s6b"
    argv = [
        str(interpreter),
        str(APP),
        bench.bootstrap,
        topic.name,
        group,
        str(bench.db),
        bench.receiver.base,
        ",".join(CHANNELS),
        ",".join(secret(ch) for ch in CHANNELS),
        json.dumps(TEMPLATE, ensure_ascii=False),
        str(CONCURRENCY * len(CHANNELS)),
    ]
    run = await run_consumer(
        argv,
        receiver=bench.receiver,
        bootstrap=bench.bootstrap,
        group=group,
        topic=topic.name,
        records=events,
        paths=healthy_paths(),
        expected_ok=events * len(CHANNELS),
        within=bench.sizes.timeout,
        log=bench.log("s6b"),
    )
    params = {
        "quixstreams": _version(interpreter),
        "events": events,
        "channels": len(CHANNELS),
        "concurrency": CONCURRENCY * len(CHANNELS),
        "commit_interval_seconds": 0.5,
        "sink": "BatchingSink: one attribute query per batch, aiohttp POSTs, no retries",
        **stack("aiohttp", "asyncio"),
    }
    return _result("S6b", "Quix Streams app + HTTP sink", params, run.figures())
