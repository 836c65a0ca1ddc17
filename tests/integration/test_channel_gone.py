"""A receiver answering 410 Gone, on the real broker: it gets at most the requests that were in
flight, then nothing, also after a restart; the other channel is not held up; `channels enable`
and `dlq replay --reason channel_disabled` send everything that was held back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson

from consumer.delivery import delivery_id
from consumer.receiver import Receiver

from .support import (
    RunningService,
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

CONCURRENCY = 4
EVENTS = 40


async def _dead_letters(setup: Setup, channel_name: str) -> list[dict[str, object]]:
    letters = [
        orjson.loads(r.value) for r in await read_all(setup.bootstrap, setup.dead_letter_topic)
    ]
    return [letter for letter in letters if letter["channel"] == channel_name]


async def _metric(admin: str, name: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{admin}/metrics") as response:
        text = await response.text()
    return next(line for line in text.splitlines() if line.startswith(name))


async def _until_metric(admin: str, name: str, value: str, within: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if (await _metric(admin, name)).endswith(f" {value}"):
            return True
        await asyncio.sleep(0.1)  # polling the admin port for a condition, with a deadline
    return False


async def test_a_gone_receiver_gets_only_the_requests_in_flight_before_and_after_a_restart(
    bootstrap: str, receiver: Receiver, tmp_path: Path
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [
            channel(receiver, "gone", max_concurrency=CONCURRENCY),
            channel(receiver, "fine"),
        ],
        {"c": ["gone", "fine"]},
        tmp=str(tmp_path),
    )
    receiver.answer("gone", default=410)
    config = setup.config()
    first = [event("c", f"u{i}") for i in range(EVENTS)]
    service = RunningService(config, setup.environ)
    await service.admin_url()
    await produce(bootstrap, setup.topic, encoded(first))
    assert await committed_to_end(setup, within=60)
    gone = [r for r in receiver.received if r.channel == "gone"]
    # At most one request per worker can be out when the first 410 comes back, and no worker
    # starts another after it: the channel's max_concurrency bounds what it ever receives.
    assert 1 <= len(gone) <= CONCURRENCY
    fine = {r.delivery_id for r in receiver.delivered() if r.channel == "fine"}
    assert fine == {delivery_id("fine", [e["event_id"]]) for e in first}
    letters = await _dead_letters(setup, "gone")
    assert sorted(letter["delivery_id"] for letter in letters) == sorted(
        delivery_id("gone", [e["event_id"]]) for e in first
    )
    assert {letter["reason"]["kind"] for letter in letters} == {"channel_disabled"}
    answered = [letter for letter in letters if letter["reason"]["status"] == 410]
    assert len(answered) == len(gone)  # the rest never had a request
    admin = await service.admin_url()
    assert (await _metric(admin, 'webhook_consumer_channel_disabled{channel="gone"}')).endswith(
        " 1.0"
    )
    async with aiohttp.ClientSession() as http, http.get(admin) as response:
        assert "disabled by receiver" in await response.text()
    await service.shutdown()

    # A new process reads the channel state back from Kafka before it takes a record.
    again = [event("c", f"v{i}") for i in range(EVENTS)]
    service = RunningService(config, setup.environ)
    await service.admin_url()
    await produce(bootstrap, setup.topic, encoded(again))
    assert await committed_to_end(setup, within=60)
    assert len([r for r in receiver.received if r.channel == "gone"]) == len(gone)  # none new
    letters = await _dead_letters(setup, "gone")
    assert len(letters) == 2 * EVENTS
    fine = {r.delivery_id for r in receiver.delivered() if r.channel == "fine"}
    assert len(fine) == 2 * EVENTS

    # The receiver is back: enable, then replay what was held back, as the runbook says.
    receiver.answer("gone", default=200)
    path = write_config(setup, tmp_path)
    status, out, err = await run_cli(
        "channels", "enable", "gone", "--config", str(path), env=setup.environ
    )
    assert status == 0, err
    assert "--reason channel_disabled --since" in out
    admin = await service.admin_url()
    assert await _until_metric(
        admin, 'webhook_consumer_channel_disabled{channel="gone"}', "0.0", within=5
    )
    replay = out.split("  webhook-consumer ", 1)[1].strip().replace("CONFIG", str(path)).split()
    status, out, err = await run_cli(*replay, env=setup.environ)
    assert status == 0, err
    wanted = {delivery_id("gone", [e["event_id"]]) for e in first + again}
    assert await receiver.wait_for(
        lambda r: {x.delivery_id for x in r.delivered() if x.channel == "gone"} >= wanted, 60
    )
    await service.shutdown()
