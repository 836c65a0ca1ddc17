"""Dead letters after exhausted retries, `dlq stats`, and `dlq replay` as an operator runs it."""

from __future__ import annotations

import re
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from consumer.deadletter import DeadLetter, Reason, SourceRef
from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.processes import Launch, ServiceProcess, run_cli

from .support import (
    Setup,
    StartService,
    carried,
    channel,
    create_topic,
    encoded,
    event,
    produce,
    read_all,
    record_count,
    wait_record_count,
    write_config,
)


async def _cli(config: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """`webhook-consumer dlq ARGS --config CONFIG`: exit status and output, wide tables."""
    code, out, _ = await run_cli(
        "dlq", *args, "--config", str(config), env={**env, "COLUMNS": "200"}, merge_stderr=True
    )
    return code, out


def _replay(
    launch: Launch, config: Path, env: dict[str, str], folder: Path, *args: str
) -> ServiceProcess:
    """A `dlq replay` process to interrupt: paced, so the interrupt lands mid-way on any
    machine (unpaced, 8,000 letters can all be sent before a poll of the broker sees 300)."""
    args = ("dlq", "replay", *args, "--rate", "1000", "--config", str(config))
    return launch(args, env, folder / "replay.log", output=folder / "replay.out")


async def test_exhausted_retries_dead_letter_then_replay_delivers_each_once(
    bootstrap: str, receiver: Receiver, tmp_path: Path, running_service: StartService
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "r")],
        {"c": ["r"]},
        tmp=str(tmp_path),
        retry={
            "quick_attempts": 2,
            "schedule_seconds": [1],
            "circuit_breaker": {"failures": 1000, "cooldown_seconds": 1},
        },
    )
    config_file = write_config(setup, tmp_path)
    receiver.answer("r", default=503)
    await create_topic(bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(20)]
    await produce(bootstrap, setup.topic, encoded(events))
    ids = {delivery_id("r", [e["event_id"]]) for e in events}

    service = running_service(setup.config(), setup.environ)
    try:
        assert await wait_record_count(bootstrap, setup.dead_letter_topic, 20, within=60)
        # Two quick attempts, then one after the 1 s delay: three requests per delivery.
        assert len(receiver.received) == 60
        assert {r.attempt for r in receiver.received} == {1, 2, 3}

        code, out = await _cli(config_file, setup.environ, "stats")
        assert code == 0, out
        assert re.search(r"│ r\s+│ http_status\s+│\s+20 │", out), out

        delay_topic = setup.delay_topic(1)
        before = await record_count(bootstrap, delay_topic)
        code, out = await _cli(config_file, setup.environ, "replay", "--dry-run")
        assert code == 0, out
        assert "would replay 20 of 20" in out
        assert await record_count(bootstrap, delay_topic) == before, "a dry run sent something"

        receiver.answer("r", default=200)  # the receiver is fixed
        code, out = await _cli(
            config_file, setup.environ, "replay", "--channel", "r", "--limit", "5"
        )
        assert code == 0, out
        assert "replayed 5 of 5" in out
        code, out = await _cli(config_file, setup.environ, "replay", "--channel", "r")
        assert code == 0, out
        assert "replayed 15 of 15" in out, "the second run must resume after the first five"
        assert await receiver.wait_for(lambda r: len(r.delivered()) >= 20, within=30)

        code, out = await _cli(config_file, setup.environ, "replay", "--channel", "r")
        assert "replayed 0 of 0" in out, out
    finally:
        await service.shutdown()
    delivered = [r for r in receiver.delivered()]
    assert sorted(r.delivery_id for r in delivered) == sorted(ids), "each exactly once"
    assert all(r.attempt == 4 for r in delivered)  # the count goes on across the replay


async def test_an_interrupted_replay_resumes_without_replaying_twice(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    setup = Setup(bootstrap, receiver, [channel(receiver, "r")], {"c": ["r"]}, tmp=str(tmp_path))
    config_file = write_config(setup, tmp_path)
    await create_topic(bootstrap, setup.dead_letter_topic, 3)
    delay_topic = setup.delay_topic(5)
    await create_topic(bootstrap, delay_topic, 3)
    total = 8000
    now = datetime.now(UTC)
    letters = [
        DeadLetter(
            delivery_id=f"d-{i}",
            channel="r",
            campaign_id="c",
            events=[{"event_id": f"e-{i}"}],
            reason=Reason(kind="http_status", status=503),
            attempts=3,
            first_attempt_at=now,
            last_attempt_at=now,
            dead_lettered_at=now,
            source=SourceRef(topic=setup.topic, partition=0, offset=i),
            sources=[SourceRef(topic=setup.topic, partition=0, offset=i)],
        ).encode()
        for i in range(total)
    ]
    await produce(bootstrap, setup.dead_letter_topic, [(None, value) for value in letters])

    process = await _replay(launch, config_file, setup.environ, tmp_path).start()
    started = await wait_record_count(bootstrap, delay_topic, 300, within=60)
    assert started, "the replay never started"
    process.send_signal(signal.SIGINT)
    assert await process.wait() == 130  # what a shell reports for Ctrl-C
    assert "interrupted" in process.output_text(), process.output_text()
    first_run = await record_count(bootstrap, delay_topic)
    assert first_run < total, "the replay had finished before the interrupt: test proves nothing"

    code, out2 = await _cli(config_file, setup.environ, "replay")
    assert code == 0, out2
    replayed = [
        orjson.loads(r.value)["delivery_id"] for r in await read_all(bootstrap, delay_topic)
    ]
    assert len(replayed) == total, f"{len(replayed) - total:+d} records against {total}"
    assert len(set(replayed)) == total, "a record was replayed twice"


async def _replayed(bootstrap: str, topic: str) -> Counter[str]:
    """Delivery ids the replay sent to the delay topic; the service's own records there (a
    busy lane parks work on it) have been parked at least once."""
    delayed = carried(await read_all(bootstrap, topic))
    return Counter(d.delivery_id for d in delayed if d.parks == 0)


def _letter(setup: Setup, index: int, at: datetime) -> bytes:
    return DeadLetter(
        delivery_id=f"d-{index}-{setup.suffix}",
        channel="r",
        campaign_id="c",
        events=[event("c", f"u-{index}")],
        template_param={"title": "hello c"},
        user_attr=[],
        reason=Reason(kind="http_status", status=503),
        limit="schedule",
        attempts=3,
        first_attempt_at=at,
        last_attempt_at=at,
        dead_lettered_at=at,
        source=SourceRef(topic=setup.topic, partition=0, offset=index),
        sources=[SourceRef(topic=setup.topic, partition=0, offset=index)],
    ).encode()


async def test_replay_since_resumes_sends_nothing_twice_and_reset_starts_over(
    bootstrap: str,
    receiver: Receiver,
    tmp_path: Path,
    launch: Launch,
    running_service: StartService,
) -> None:
    setup = Setup(bootstrap, receiver, [channel(receiver, "r")], {"c": ["r"]}, tmp=str(tmp_path))
    config_file = write_config(setup, tmp_path)
    await create_topic(bootstrap, setup.dead_letter_topic, 3)
    delay_topic = setup.delay_topic(5)
    await create_topic(bootstrap, delay_topic, 3)
    recent, old = 8000, 400
    now = datetime.now(UTC)
    letters = [
        # Every 21st letter is three hours old: `--since 2h` must leave it alone.
        _letter(setup, i, now - timedelta(hours=3) if i % 21 == 20 else now)
        for i in range(recent + old)
    ]
    await produce(bootstrap, setup.dead_letter_topic, [(None, value) for value in letters])
    wanted = {f"d-{i}-{setup.suffix}" for i in range(recent + old) if i % 21 != 20}
    assert len(wanted) == recent

    def delivered() -> Counter[str]:
        return Counter(r.delivery_id for r in receiver.delivered())

    service = running_service(setup.config(), setup.environ)  # the receiver is healthy
    try:
        process = _replay(launch, config_file, setup.environ, tmp_path, "--since", "2h")
        await process.start()
        started = await wait_record_count(bootstrap, delay_topic, 300, within=60)
        assert started, "the replay never started"
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 130, process.output_text()
        assert "interrupted" in process.output_text(), process.output_text()
        first_run = sum((await _replayed(bootstrap, delay_topic)).values())
        assert first_run < recent, "the replay had finished before the interrupt: proves nothing"

        code, out2 = await _cli(config_file, setup.environ, "replay", "--since", "2h")
        assert code == 0, out2
        assert "resuming the replay started" in out2, out2
        sent = await _replayed(bootstrap, delay_topic)
        assert set(sent) == wanted, "a letter never sent, or one outside --since 2h"
        assert set(sent.values()) == {1}, "a letter sent twice"

        code, out3 = await _cli(config_file, setup.environ, "replay", "--since", "2h")
        assert code == 0, out3
        assert "replayed 0 of 0" in out3, out3
        assert sum((await _replayed(bootstrap, delay_topic)).values()) == recent

        assert await receiver.wait_for(lambda r: set(delivered()) >= wanted, within=120)
        once = delivered()
        assert set(once) == wanted, f"{len(set(once) - wanted)} letters outside --since 2h"
        assert max(once.values()) == 1, f"{sum(once.values()) - len(once)} duplicates"

        code, stats = await _cli(config_file, setup.environ, "stats")
        assert code == 0, stats
        assert re.search(r"--since 2h .*finished", stats), stats

        code, out4 = await _cli(config_file, setup.environ, "replay", "--since", "2h", "--reset")
        assert code == 0, out4
        assert f"replayed {recent} of {recent}" in out4, out4
        assert set((await _replayed(bootstrap, delay_topic)).values()) == {2}
        assert await receiver.wait_for(
            lambda r: all(n >= 2 for n in delivered().values()), within=120
        )
    finally:
        await service.shutdown()
    twice = delivered()
    assert set(twice) == wanted
    assert set(twice.values()) == {2}, "after --reset each letter is replayed exactly once more"
    print(f"\nreplay --since 2h: interrupted after {first_run} of {recent}, resumed, reset")
