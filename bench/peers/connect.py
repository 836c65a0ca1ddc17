"""S6a: Kafka Connect 4.1 standalone with our minimal HTTP sink (bench/peers/connect).

A best case for Connect: one task, no retries, no rate limits, no dead letters, no attribute
look-up; each record is POSTed to the three channels with keep-alive and an HMAC header.
JVM start-up (launch to first request) is reported apart from the steady window.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
from pathlib import Path

from ..context import CONCURRENCY, Bench, healthy_paths
from ..measure import run_consumer
from ..paths import CACHE, HERE
from ..scenarios import Result, _result, stack
from ..workload import CHANNELS, TEMPLATE, secret

SOURCE = HERE / "peers" / "connect"
BUILD = CACHE / "connect"
KAFKA_VERSION = "4.1.1"
# What bin/connect-standalone.sh gives the JVM by default: KAFKA_HEAP_OPTS and
# KAFKA_JVM_PERFORMANCE_OPTS.
JVM_OPTIONS = [
    "-Xms256M",
    "-Xmx2G",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]


def build() -> list[Path]:
    """The class path: our sink's jar and connect-runtime with its dependencies, from Maven."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(SOURCE)).encode() + path.read_bytes())
    marker = BUILD / f".built-{digest.hexdigest()[:12]}"
    if not marker.exists():
        if shutil.which("mvn") is None:
            raise RuntimeError("S6a needs Maven (mvn) and Java 17+ on PATH")
        shutil.rmtree(BUILD, ignore_errors=True)
        built = subprocess.run(  # quiet unless it fails: then its output is the error
            [
                "mvn",
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(SOURCE / "pom.xml"),
                f"-DbuildDir={BUILD}",
                f"-Dkafka.version={KAFKA_VERSION}",
                "package",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise RuntimeError(f"mvn could not build the Connect sink:\n{built.stdout[-3000:]}")
        marker.touch()
    return [*BUILD.glob("gio-http-sink-*.jar"), BUILD / "dependency" / "*"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _properties(path: Path, values: dict[str, object]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    return path


async def scenario(bench: Bench) -> Result:
    classpath = build()
    topic = bench.topic("mid")
    events = topic.records
    name = f"{bench.prefix}-s6a"
    worker = _properties(
        bench.folder / "s6a-worker.properties",
        {
            "bootstrap.servers": bench.bootstrap,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false",
            "offset.storage.file.filename": bench.folder / "s6a.offsets",
            "offset.flush.interval.ms": 500,  # the service commits every 500 ms too
            "listeners": f"http://127.0.0.1:{_free_port()}",
            "plugin.discovery": "service_load",  # our sink has its manifest: no class scan
        },
    )
    connector = _properties(
        bench.folder / "s6a-connector.properties",
        {
            "name": name,
            "connector.class": "bench.connect.GioHttpSinkConnector",
            "tasks.max": 1,
            "topics": topic.name,
            "gio.base.url": bench.receiver.base,
            "gio.channels": ",".join(CHANNELS),
            "gio.secrets": ",".join(secret(ch) for ch in CHANNELS),
            "gio.template": json.dumps(TEMPLATE, ensure_ascii=True),
            "gio.concurrency": CONCURRENCY * len(CHANNELS),
        },
    )
    argv = [
        "java",
        *JVM_OPTIONS,
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp",
        ":".join(str(p) for p in classpath),
        "org.apache.kafka.connect.cli.ConnectStandalone",
        str(worker),
        str(connector),
    ]
    run = await run_consumer(
        argv,
        receiver=bench.receiver,
        bootstrap=bench.bootstrap,
        group=f"connect-{name}",  # a sink connector's consumer group
        topic=topic.name,
        records=events,
        paths=healthy_paths(),
        expected_ok=events * len(CHANNELS),
        within=bench.sizes.timeout,
        log=bench.log("s6a"),
    )
    params = {
        "kafka_connect": KAFKA_VERSION,
        "mode": "standalone",
        "tasks_max": 1,
        "events": events,
        "channels": len(CHANNELS),
        "concurrency": CONCURRENCY * len(CHANNELS),
        "offset_flush_interval_ms": 500,
        "jvm": " ".join(JVM_OPTIONS),
        "best_case": "our minimal sink: no retries, rate limits, dead letters or attribute look-up",
        **stack("java.net.http.HttpClient", None),
    }
    return _result("S6a", "Kafka Connect + our minimal HTTP sink", params, run.figures())
