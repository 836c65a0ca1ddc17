"""Live reload against real lanes and in-memory sinks: what changes, what stays, what is kept."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from consumer.catalog import Catalog, Channel
from consumer.config import load_config
from consumer.deadletter import DeadLetterWriter, MemoryDeadLetterSink
from consumer.delaypath import DelayPath, MemoryDelaySink, delay_levels
from consumer.delivery import Delivery, Source, Ticket, delivery_id
from consumer.lanes import ChannelLane
from consumer.outcome import Outcome, from_response
from consumer.reload import Reloader

from .fakes import FakeOwner

if TYPE_CHECKING:
    from .conftest import WaitUntil

ENV = {"HOOK_SECRET": "first-secret"}


class Gate:
    """A transport whose answers wait until the test opens it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.sent: list[tuple[str, str, str]] = []  # (delivery id, url, secret)

    async def send(self, delivery: Delivery) -> Outcome:
        self.sent.append((delivery.id, str(delivery.channel.url), delivery.channel.secret.reveal()))
        await self.opened.wait()
        return from_response(200, None, "ok")


@dataclass
class Setup:
    path: Path
    reloader: Reloader
    lanes: dict[str, ChannelLane]
    transport: Gate
    letters: MemoryDeadLetterSink
    used: list[Catalog]

    def write(self, **changes: Any) -> None:
        self.path.write_text(yaml.safe_dump(document(**changes)), encoding="utf-8")


def document(**changes: Any) -> dict[str, Any]:
    channel = {
        "name": "crm",
        "url": "http://127.0.0.1:9/a",
        "secret_env": "HOOK_SECRET",
        "template_params": {"title": "string"},
        "max_concurrency": 2,
        "rate_limit": {"per_second": 10},
    }
    doc: dict[str, Any] = {
        "allowed_networks": ["127.0.0.0/8"],
        "channels": [channel],
        "campaigns": [{"id": "c", "channels": ["crm"], "template_params": {"title": "hi"}}],
    }
    for key, value in changes.items():
        if key == "channel":
            channel.update(value)
        else:
            doc[key] = value
    return doc


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document()), encoding="utf-8")
    config = load_config(path, ENV)
    catalog = Catalog.from_config(config, ENV)
    letters = MemoryDeadLetterSink()
    dead_letters = DeadLetterWriter(letters)
    delays = DelayPath(MemoryDelaySink(), "g.retry", delay_levels(config.retry), "g")
    transport = Gate()

    def make_lane(channel: Channel) -> ChannelLane:
        return ChannelLane(
            channel, transport, dead_letters, delays, config.retry, rng=random.Random(1)
        )

    lanes = {name: make_lane(ch) for name, ch in catalog.channels.items()}
    for lane in lanes.values():
        lane.start()
    used: list[Catalog] = []

    class Recorder:
        def use(self, catalog: Catalog) -> None:
            used.append(catalog)

    reloader = Reloader(path, config, catalog, lanes, make_lane, [Recorder()], ENV)
    yield Setup(path, reloader, lanes, transport, letters, used)
    transport.opened.set()
    await reloader.close()
    for lane in lanes.values():
        await lane.close()
    await delays.close()
    await dead_letters.close()


def delivery(channel: Channel, owner: FakeOwner, offset: int) -> Delivery:
    source = Source("events", 0, offset)
    return Delivery(
        id=delivery_id(channel.name, [f"e{offset}"]),
        channel=channel,
        campaign_id="c",
        template_param={"title": "hi"},
        user_attr=[],
        events=[{"event_id": f"e{offset}"}],
        sources=[source],
        tickets=[Ticket(source, 1, owner)],
    )


async def test_an_invalid_file_changes_nothing(setup: Setup) -> None:
    before = setup.reloader.config
    setup.path.write_text("channels: [{name: crm, url: 'ftp://nope'}]\n", encoding="utf-8")
    assert await setup.reloader.reload() is None
    assert setup.reloader.config is before
    assert set(setup.lanes) == {"crm"}
    assert setup.used == []


async def test_a_new_limit_url_and_secret_apply_to_queued_work_without_losing_it(
    setup: Setup, tmp_path: Path, wait_until: WaitUntil
) -> None:
    lane = setup.lanes["crm"]
    owner = FakeOwner()
    for offset in range(4):  # 2 go out at once (max_concurrency 2), 2 wait in the queue
        lane.submit(delivery(lane.channel, owner, offset))
    await wait_until(lambda: len(setup.transport.sent) == 2, what="two requests out")
    secret_file = tmp_path / "secret"
    secret_file.write_text("second-secret\n", encoding="utf-8")
    setup.write(
        channel={
            "url": "http://127.0.0.1:9/b",
            "rate_limit": {"per_second": 50},
            "secret_env": None,
            "secret_file": str(secret_file),
        }
    )
    report = await setup.reloader.reload()
    assert report is not None
    assert report.channels_changed == ["crm"]
    assert lane.channel.rate_limit is not None
    assert lane.channel.rate_limit.per_second == 50
    setup.transport.opened.set()
    await wait_until(lambda: sorted(owner) == [0, 1, 2, 3], what="all four delivered")
    sent = setup.transport.sent
    assert len(sent) == 4
    assert len({d for d, _, _ in sent}) == 4
    assert [(url[-1], secret) for _, url, secret in sent[2:]] == [("b", "second-secret")] * 2
    assert setup.used[-1] is setup.reloader.catalog


async def test_a_secret_file_rotated_under_the_same_yaml_is_picked_up(
    setup: Setup, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("one", encoding="utf-8")
    setup.write(channel={"secret_env": None, "secret_file": str(secret_file)})
    await setup.reloader.reload()
    secret_file.write_text("two", encoding="utf-8")
    report = await setup.reloader.reload()
    assert report is not None
    assert report.channels_changed == ["crm"]
    assert setup.lanes["crm"].channel.secret.reveal() == "two"


async def test_channels_come_and_go_and_a_removed_ones_queue_becomes_dead_letters(
    setup: Setup, wait_until: WaitUntil
) -> None:
    lane = setup.lanes["crm"]
    owner = FakeOwner()
    for offset in range(5):
        lane.submit(delivery(lane.channel, owner, offset))
    await wait_until(lambda: len(setup.transport.sent) == 2, what="two requests out")
    other = {"name": "crm2", "url": "http://127.0.0.1:9/c", "template_params": {"title": "string"}}
    setup.write(
        channels=[other],
        campaigns=[{"id": "c", "channels": ["crm2"], "template_params": {"title": "hi"}}],
    )
    report = await setup.reloader.reload()
    assert report is not None
    assert (report.channels_added, report.channels_removed) == (["crm2"], ["crm"])
    assert report.campaigns_changed
    assert set(setup.lanes) == {"crm2"}
    await wait_until(lambda: len(setup.letters.letters) == 3, what="queued work dead-lettered")
    assert {letter.reason.kind for letter in setup.letters.letters} == {"unknown_channel"}
    assert {letter.channel for letter in setup.letters.letters} == {"crm"}  # replayable to it
    setup.transport.opened.set()  # the two requests already out still finish
    await wait_until(lambda: sorted(owner) == [0, 1, 2, 3, 4], what="every record finished")


async def test_sections_that_need_a_restart_are_named_not_applied(setup: Setup) -> None:
    setup.write(kafka={"group_id": "another-group"}, retry={"quick_attempts": 7})
    report = await setup.reloader.reload()
    assert report is not None
    assert report.needs_restart == ["kafka", "retry"]
    assert report.channels_changed == []


async def test_a_smaller_concurrency_lets_workers_go_and_a_larger_adds_them(
    setup: Setup, wait_until: WaitUntil
) -> None:
    lane = setup.lanes["crm"]
    setup.write(channel={"max_concurrency": 5})
    await setup.reloader.reload()
    owner = FakeOwner()
    for offset in range(8):
        lane.submit(delivery(lane.channel, owner, offset))
    await wait_until(lambda: len(setup.transport.sent) == 5, what="five requests out")
    setup.write(channel={"max_concurrency": 1})
    await setup.reloader.reload()
    setup.transport.opened.set()
    await wait_until(lambda: len(owner) == 8, what="all delivered")
    assert sum(not t.done() for t in lane._tasks) == 2  # one worker left, and the watcher
