"""Stale triggers on a real broker: an event older than its campaign's limit is never sent, a
delivery that goes stale on the delay path is dead-lettered when it comes back, and `dlq
replay` skips expired letters unless told `--ignore-expiry`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from consumer.deadletter import DeadLetter
from consumer.delivery import delivery_id
from consumer.receiver import Receiver

from .admin_port import poll_status
from .support import (
    Setup,
    StartService,
    channel,
    create_topic,
    encoded,
    event,
    produce,
    read_all,
    run_cli,
    wait_record_count,
    write_config,
)


@dataclass
class LimitedSetup(Setup):
    """Campaigns with their own freshness limits."""

    limits: dict[str, float] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        document = super().document()
        for campaign in document["campaigns"]:
            if campaign["id"] in self.limits:
                campaign["expire_after_seconds"] = self.limits[campaign["id"]]
        return document


async def letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(r.value) for r in await read_all(bootstrap, topic)]


async def test_an_event_older_than_its_campaigns_limit_is_never_sent(
    bootstrap: str, receiver: Receiver, tmp_path: Path, running_service: StartService
) -> None:
    setup = LimitedSetup(
        bootstrap,
        receiver,
        [channel(receiver, "a")],
        {"fresh-only": ["a"], "any-age": ["a"]},
        tmp=str(tmp_path),
        limits={"fresh-only": 600},
    )
    await create_topic(bootstrap, setup.topic, 3)
    hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    stale = [event("fresh-only", f"u-{i}", occurred_at=hours_ago) for i in range(20)]
    fresh = [event("fresh-only", f"u-{i}") for i in range(20)]
    old_but_unlimited = [event("any-age", f"u-{i}", occurred_at=hours_ago) for i in range(5)]
    await produce(bootstrap, setup.topic, encoded(stale + fresh + old_but_unlimited))

    service = running_service(setup.config(), setup.environ)
    assert await wait_record_count(bootstrap, setup.dead_letter_topic, 20, within=60)
    assert await receiver.wait_for(lambda r: len(r.delivered()) >= 25, within=60)
    await service.shutdown()
    ids = lambda events: sorted(delivery_id("a", [e["event_id"]]) for e in events)  # noqa: E731
    sent = sorted(r.delivery_id for r in receiver.received)
    # Not one stale event went out, and each fresh one exactly once.
    assert sent == sorted(ids(fresh) + ids(old_but_unlimited))
    found = await letters(bootstrap, setup.dead_letter_topic)
    assert sorted(letter.delivery_id for letter in found) == ids(stale)  # one letter each
    assert {(letter.reason.kind, letter.attempts) for letter in found} == {("expired", 0)}


async def test_a_delivery_gone_stale_on_the_delay_path_is_not_sent_again_unless_replayed_so(
    bootstrap: str,
    receiver: Receiver,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    running_service: StartService,
) -> None:
    setup = LimitedSetup(
        bootstrap,
        receiver,
        [channel(receiver, "r")],
        {"c": ["r"]},
        tmp=str(tmp_path),
        retry={"quick_attempts": 2, "schedule_seconds": [8], "circuit_breaker": {"failures": 1000}},
        limits={"c": 5},
    )
    config_file = write_config(setup, tmp_path)
    receiver.answer("r", default=503)
    await create_topic(bootstrap, setup.topic, 3)
    service = running_service(setup.config(), setup.environ)
    await poll_status(http, f"{await service.admin_url()}/readyz", 200)
    events = [event("c", f"u-{i}") for i in range(10)]  # occurred now, once it is ready
    ids = {delivery_id("r", [e["event_id"]]) for e in events}
    await produce(bootstrap, setup.topic, encoded(events))
    assert await wait_record_count(bootstrap, setup.dead_letter_topic, 10, within=60)
    # Both quick attempts come within a second of the event (backoff up to 200 ms), well
    # inside its 5 s; the 8 s delay outlasts it, so the delivery comes back stale and is
    # never tried a third time.
    attempts = Counter(r.delivery_id for r in receiver.received)
    assert attempts == dict.fromkeys(ids, 2)
    found = await letters(bootstrap, setup.dead_letter_topic)
    assert sorted(letter.delivery_id for letter in found) == sorted(ids)  # one letter each
    assert {(letter.reason.kind, letter.attempts) for letter in found} == {("expired", 2)}

    receiver.answer("r", default=200)
    code, out = await _replay(config_file, setup.environ, "--channel", "r")
    assert code == 0, out
    assert "replayed 0 of 10" in out
    assert "10 not replayable: past their campaign's expire_after_seconds" in out
    code, out = await _replay(config_file, setup.environ, "--channel", "r", "--ignore-expiry")
    assert code == 0, out
    assert "replayed 10 of 10" in out
    assert await receiver.wait_for(lambda r: len(r.delivered()) >= 10, within=30)
    await service.shutdown()
    assert sorted(r.delivery_id for r in receiver.delivered()) == sorted(ids)  # once each
    assert {r.attempt for r in receiver.delivered()} == {3}


async def _replay(config: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    code, out, err = await run_cli(
        "dlq", "replay", *args, "--config", str(config), env={**env, "COLUMNS": "200"}
    )
    return code, out + err
