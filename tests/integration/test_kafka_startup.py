"""`webhook-consumer run` started while Kafka is down waits for it, then delivers; one that can
never reach it gives up after kafka.startup_timeout_seconds with one line, exit 1.

The broker is a private one (deploy/local/kafka with its own folder and ports), started only
after the service is already waiting for it.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
from aiokafka.admin import AIOKafkaAdminClient

from consumer.receiver import Receiver
from tests.support.polling import until
from tests.support.ports import free_port
from tests.support.processes import Launch, run_args, run_cli

from .kafka import PrivateBroker
from .support import (
    Setup,
    channel,
    committed_to_end,
    encoded,
    event,
    pairs_delivered,
    produce,
    write_config,
)

EVENTS = 20


async def readyz(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(5)) as r,
    ):
        return r.status, await r.text()


async def topic_exists(bootstrap: str, topic: str, within: float) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:

        async def listed() -> bool:
            return topic in await admin.list_topics()

        return await until(listed, within, every=0.1)
    finally:
        await admin.close()


async def test_run_started_before_kafka_waits_and_then_delivers(
    unstarted_broker: PrivateBroker, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    broker = unstarted_broker
    admin_port = free_port()
    setup = Setup(
        broker.bootstrap,
        receiver,
        [channel(receiver, "hooks")],
        {"c": ["hooks"]},
        log_level="info",
        tmp=str(tmp_path),
        admin={"host": "127.0.0.1", "port": admin_port},
    )
    config = write_config(setup, tmp_path)
    service = await launch(run_args(config), setup.environ, tmp_path / "stderr.log").start()
    stderr = service.log
    try:
        assert await stderr.wait_for("kafka.unreachable", within=30), stderr.text()[-3000:]
        status, reason = await readyz(admin_port)
        assert (status, reason) == (
            503,
            "unavailable: waiting for Kafka: unreachable at start (see kafka.unreachable)\n",
        )
        await broker.start(fresh=True)  # returns once the broker answers
        ready_at = time.monotonic()

        assert await topic_exists(broker.bootstrap, setup.topic, within=60)  # the service's
        await produce(
            broker.bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(EVENTS))
        )
        assert await receiver.wait_for(lambda r: len(pairs_delivered(r)) == EVENTS, within=90)
        assert await committed_to_end(setup, within=60)
        first = min(r.at for r in receiver.delivered())
        # A figure, not a target (docs/runbook.md quotes it): back-off is capped at 5 s, then the
        # topics are created and the group joined. The bound only says the wait ended.
        print(f"\nbroker ready -> first delivery: {first - ready_at:.1f} s")
        assert first - ready_at < 60
        assert service.running
        assert (await readyz(admin_port))[0] == 200
    finally:
        code = await service.stop()
    assert code == 0
    assert len(receiver.delivered()) == EVENTS  # each exactly once
    assert len(stderr.events("kafka.unreachable")) == 1  # one line for the whole wait
    (recovered,) = stderr.events("kafka.recovered")
    assert recovered["phase"] == "start"


async def test_run_gives_up_after_the_startup_timeout_with_one_line(
    receiver: Receiver, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    setup = Setup(
        f"127.0.0.1:{port}",
        receiver,
        [channel(receiver, "hooks")],
        {"c": ["hooks"]},
        kafka={"startup_timeout_seconds": 3},
        tmp=str(tmp_path),
    )
    config = write_config(setup, tmp_path)
    started = time.monotonic()
    # --log-level error: only the one line that ends it.
    code, _, err = await run_cli(*run_args(config, "--log-level", "error"), env=setup.environ)
    took = time.monotonic() - started
    assert code == 1
    assert err.splitlines() == [
        "webhook-consumer: KafkaUnavailable: cannot connect to Kafka (PLAINTEXT): "
        f"127.0.0.1:{port}: Connection refused (waited 3 s)"
    ]
    assert 3 <= took < 30
