"""A receiver answering 410 Gone, on the real broker: it gets at most the requests that were in
flight, then nothing, also after a restart; the other channel is not held up; `channels enable`
and `dlq replay --reason channel_disabled` send everything that was held back."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson

from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.polling import wait_until

from .admin_port import metric
from .support import (
    Setup,
    StartService,
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
DISABLED = "webhook_consumer_channel_disabled"


async def _dead_letters(setup: Setup, channel_name: str) -> list[dict[str, object]]:
    letters = [
        orjson.loads(r.value) for r in await read_all(setup.bootstrap, setup.dead_letter_topic)
    ]
    return [letter for letter in letters if letter["channel"] == channel_name]


def _ids(channel_name: str, events: list[dict[str, object]]) -> list[str]:
    return sorted(delivery_id(channel_name, [str(e["event_id"])]) for e in events)


def _delivered(receiver: Receiver, channel_name: str) -> list[str]:
    """Delivery ids answered 2xx on this channel, a duplicate as often as it came."""
    return sorted(r.delivery_id for r in receiver.delivered() if r.channel == channel_name)


async def _metric_is(admin: str, name: str, wanted: float, **labels: str) -> bool:
    return await metric(admin, name, **labels) == wanted


async def test_a_gone_receiver_gets_only_the_requests_in_flight_before_and_after_a_restart(
    bootstrap: str, receiver: Receiver, tmp_path: Path, running_service: StartService
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
    service = running_service(config, setup.environ)
    await service.admin_url()
    await produce(bootstrap, setup.topic, encoded(first))
    assert await committed_to_end(setup, within=60)
    gone = [r for r in receiver.received if r.channel == "gone"]
    # At most one request per worker can be out when the first 410 comes back, and no worker
    # starts another after it: the channel's max_concurrency bounds what it ever receives.
    assert 1 <= len(gone) <= CONCURRENCY
    assert _delivered(receiver, "fine") == _ids("fine", first)  # each exactly once
    letters = await _dead_letters(setup, "gone")
    assert sorted(letter["delivery_id"] for letter in letters) == _ids("gone", first)
    assert {letter["reason"]["kind"] for letter in letters} == {"channel_disabled"}
    answered = [letter for letter in letters if letter["reason"]["status"] == 410]
    assert len(answered) == len(gone)  # the rest never had a request
    admin = await service.admin_url()
    assert await metric(admin, DISABLED, channel="gone") == 1
    async with aiohttp.ClientSession() as http, http.get(admin) as response:
        assert "disabled by receiver" in await response.text()
    await service.shutdown()

    # A new process reads the channel state back from Kafka before it takes a record.
    again = [event("c", f"v{i}") for i in range(EVENTS)]
    service = running_service(config, setup.environ)
    await service.admin_url()
    await produce(bootstrap, setup.topic, encoded(again))
    assert await committed_to_end(setup, within=60)
    assert len([r for r in receiver.received if r.channel == "gone"]) == len(gone)  # none new
    letters = await _dead_letters(setup, "gone")
    assert len(letters) == 2 * EVENTS
    assert _delivered(receiver, "fine") == _ids("fine", first + again)  # a drained stop

    # The receiver is back: enable, then replay what was held back, as the runbook says.
    receiver.answer("gone", default=200)
    path = write_config(setup, tmp_path)
    status, out, err = await run_cli(
        "channels", "enable", "gone", "--config", str(path), env=setup.environ
    )
    assert status == 0, err
    assert "--reason channel_disabled --since" in out
    admin = await service.admin_url()
    await wait_until(
        lambda: _metric_is(admin, DISABLED, 0, channel="gone"), 5, "the channel enabled"
    )
    replay = out.split("  webhook-consumer ", 1)[1].strip().replace("CONFIG", str(path)).split()
    status, out, err = await run_cli(*replay, env=setup.environ)
    assert status == 0, err
    wanted = _ids("gone", first + again)
    assert await receiver.wait_for(lambda r: _delivered(r, "gone") == wanted, 60)
    await service.shutdown()
    # One replay of one letter each: every held-back delivery exactly once, nothing else.
    assert _delivered(receiver, "gone") == wanted
