"""`webhook-consumer channels` against two real `webhook-consumer run` replicas on the real
broker: disable, enable and reset-circuit reach both within 5 s of the command's return, a
disabled channel is sent nothing and its deliveries are dead-lettered, `channels list` says who
did it and why, and the runbook's replay sends what was held back."""

from __future__ import annotations

import re
import time
from pathlib import Path

import orjson

from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.polling import until
from tests.support.processes import Launch

from .admin_port import metric
from .fleet import ReplicaProcesses
from .support import (
    Setup,
    channel,
    committed_to_end,
    encoded,
    event,
    produce,
    read_all,
    run_cli,
    write_config,
)

WITHIN = 5.0  # what the command promises: every running replica acts within 5 s
ALPHA = {"channel": "alpha"}
DISABLED = "webhook_consumer_channel_disabled"
ATTEMPTS = "webhook_consumer_attempts_total"
CIRCUIT = "webhook_consumer_circuit_state"


async def _replicas(processes: ReplicaProcesses) -> list[str]:
    """Each replica's admin URL, once every one has started."""

    def started() -> bool:
        return all(log.events("service.started") for log in processes.logs)

    assert await until(started, 60), [log.tail() for log in processes.logs]
    return [
        f"http://127.0.0.1:{log.events('service.started')[0]['admin_port']}"
        for log in processes.logs
    ]


async def _each(replicas: list[str], name: str, value: float, **labels: str) -> bool:
    return all([await metric(r, name, **ALPHA, **labels) == value for r in replicas])


async def test_disable_enable_and_reset_circuit_reach_every_replica(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "alpha", max_concurrency=4)],
        {"c": ["alpha"]},
        tmp=str(tmp_path),
        log_level="info",
        retry={
            "quick_attempts": 1,
            "schedule_seconds": [600],
            "circuit_breaker": {"failures": 2, "cooldown_seconds": 600},
        },
    )
    path = write_config(setup, tmp_path)
    processes = ReplicaProcesses(launch, path, setup.environ, tmp_path, 2)
    await processes.start()
    try:
        replicas = await _replicas(processes)

        # Both replicas deliver (each owns partitions of the input, once the group settled).
        batch = 0

        async def both_deliver() -> bool:
            nonlocal batch
            if await _each_above(replicas, ATTEMPTS, 0, result="success"):
                return True
            batch += 1
            await produce(
                bootstrap, setup.topic, encoded(event("c", f"w{batch}-{i}") for i in range(20))
            )
            return False

        assert await until(both_deliver, 60), "both replicas deliver"
        assert await committed_to_end(setup, within=60)

        async def cli(*args: str) -> str:
            status, out, err = await run_cli(
                "channels", *args, "--config", str(path), env=setup.environ
            )
            assert status == 0, err
            return out

        started = time.monotonic()
        await cli("disable", "alpha", "--reason", "receiver maintenance until 14:00")
        returned = time.monotonic()
        assert await until(lambda: _each(replicas, DISABLED, 1.0), WITHIN)
        _said("disable", started, returned)
        before = len(receiver.received)
        held = [event("c", f"h{i}") for i in range(30)]
        await produce(bootstrap, setup.topic, encoded(held))
        assert await committed_to_end(setup, within=60)
        assert len(receiver.received) == before  # neither replica sent a request
        letters = [
            orjson.loads(r.value) for r in await read_all(bootstrap, setup.dead_letter_topic)
        ]
        assert sorted(letter["delivery_id"] for letter in letters) == sorted(
            delivery_id("alpha", [e["event_id"]]) for e in held
        )
        assert {(x["reason"]["kind"], x["reason"]["status"]) for x in letters} == {
            ("channel_disabled", None)
        }
        listing = await cli("list")
        [row] = [line for line in listing.splitlines() if "alpha" in line]
        assert "disabled" in row
        assert "receiver maintenance" in listing

        started = time.monotonic()
        out = await cli("enable", "alpha")
        returned = time.monotonic()
        assert await until(lambda: _each(replicas, DISABLED, 0.0), WITHIN)
        _said("enable", started, returned)
        replay = re.search(r"webhook-consumer (dlq replay .*)", out)
        assert replay is not None
        words = replay.group(1).replace("CONFIG", str(path)).split()
        status, _, err = await run_cli(*words, env=setup.environ)
        assert status == 0, err
        wanted = {delivery_id("alpha", [e["event_id"]]) for e in held}
        assert await receiver.wait_for(
            lambda r: {x.delivery_id for x in r.delivered()} >= wanted, 60
        )

        # Circuits open on both replicas (each holds its own: the local backend)...
        receiver.answer("alpha", default=503)
        failing = [event("c", f"f{i}") for i in range(60)]
        await produce(bootstrap, setup.topic, encoded(failing))
        assert await until(lambda: _each(replicas, CIRCUIT, 1.0, state="open"), 60)
        listing = await cli("list")
        assert "open on 2 of 2 replicas" in listing
        assert "http_status 503" in listing
        # ... and one command closes both, through each replica's breaker.
        receiver.answer("alpha", default=200)
        started = time.monotonic()
        await cli("reset-circuit", "alpha")
        returned = time.monotonic()
        assert await until(lambda: _each(replicas, CIRCUIT, 1.0, state="closed"), WITHIN)
        _said("reset-circuit", started, returned)
        after = [event("c", f"a{i}") for i in range(20)]
        await produce(bootstrap, setup.topic, encoded(after))
        wanted = {delivery_id("alpha", [e["event_id"]]) for e in after}
        assert await receiver.wait_for(
            lambda r: {x.delivery_id for x in r.delivered()} >= wanted, 60
        )
    finally:
        statuses = await processes.stop()
    assert statuses == [0, 0]


async def _each_above(replicas: list[str], name: str, floor: float, **labels: str) -> bool:
    values = [await metric(r, name, **ALPHA, **labels) for r in replicas]
    return all(v is not None and v > floor for v in values)


def _said(what: str, started: float, returned: float) -> None:
    now = time.monotonic()
    print(
        f"{what}: both replicas acted {now - returned:.2f} s after the command returned "
        f"({now - started:.2f} s after it started)"
    )
