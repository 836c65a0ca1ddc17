"""A broker restart under a running `webhook-consumer run`, as an operator reads it on stderr.

The broker is a private one (deploy/local/kafka with its own folder and ports): the shared
one must never stop.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from consumer.receiver import Receiver
from tests.support.processes import Launch, run_args

from .kafka import PrivateBroker
from .support import (
    Setup,
    channel,
    committed_to_end,
    create_topic,
    encoded,
    event,
    pairs_delivered,
    produce,
    write_config,
)

OUTAGE_SECONDS = 12.0


async def test_a_broker_restart_is_two_log_lines_and_no_event_is_lost(
    private_broker: PrivateBroker, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    broker = private_broker
    setup = Setup(
        broker.bootstrap,
        receiver,
        [channel(receiver, "hooks")],
        {"c": ["hooks"]},
        log_level="info",
        tmp=str(tmp_path),
    )
    config = write_config(setup, tmp_path)
    await create_topic(broker.bootstrap, setup.topic, 3)
    before = [event("c", f"u-{i}") for i in range(20)]
    await produce(broker.bootstrap, setup.topic, encoded(before))

    # --log-format auto: a file, not a terminal, so JSON.
    service = launch(run_args(config, "--log-format", "auto"), setup.environ, tmp_path / "err")
    stderr = service.log
    await service.start()
    try:
        assert await receiver.wait_for(lambda r: len(pairs_delivered(r)) == 20, within=60)
        assert await committed_to_end(setup, within=30)

        loop = asyncio.get_running_loop()
        await broker.stop()
        stopped_at, lines_before = loop.time(), len(stderr.text().splitlines())
        assert await stderr.wait_for("kafka.unreachable", within=30), stderr.text()[-3000:]
        # The outage itself lasts this long; nothing is being waited for.
        await asyncio.sleep(OUTAGE_SECONDS - (loop.time() - stopped_at))
        lines_during = len(stderr.text().splitlines()) - lines_before
        await broker.start()  # same folder: same data, same ports

        after = [event("c", f"v-{i}") for i in range(20)]
        await produce(broker.bootstrap, setup.topic, encoded(after))
        assert await receiver.wait_for(lambda r: len(pairs_delivered(r)) == 40, within=90)
        assert await committed_to_end(setup, within=60)
        assert await stderr.wait_for("kafka.recovered", within=30), stderr.text()[-3000:]
        assert service.running  # the same process delivered all of it
    finally:
        code = await service.stop()
    assert code == 0

    lines = stderr.text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line, aiokafka's included, is JSON
    assert all({"event", "level", "logger", "timestamp"} <= line.keys() for line in parsed)
    (unreachable,) = stderr.events("kafka.unreachable")
    (recovered,) = stderr.events("kafka.recovered")
    assert unreachable["error"]
    assert recovered["down_seconds"] >= OUTAGE_SECONDS - 2
    # aiokafka wrote about a hundred lines a second during the outage; they were folded.
    assert recovered["suppressed"] >= 100
    assert lines_during <= 3, lines[lines_before : lines_before + lines_during]
    assert not [line for line in parsed if line["level"] == "error"]
