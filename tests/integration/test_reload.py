"""SIGHUP on a running `webhook-consumer run`: a new limit takes effect with nothing lost or
sent twice, and an invalid file leaves the running config in force."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import yaml

from consumer.delivery import delivery_id
from consumer.receiver import Receiver

from .support import Setup, channel, create_topic, encoded, event, produce, write_config


def _busiest_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + 1) for t in times), default=0)


async def test_sighup_applies_a_new_rate_limit_and_keeps_the_old_config_when_invalid(
    bootstrap: str, receiver: Receiver, tmp_path: Path
) -> None:
    slow = channel(receiver, "r", rate_limit={"per_second": 10, "burst": 1})
    setup = Setup(bootstrap, receiver, [slow], {"c": ["r"]}, tmp=str(tmp_path), log_level="info")
    setup.retry["max_backlog_seconds"] = 600  # nothing parked: the lane's own pace is measured
    config_path = write_config(setup, tmp_path)
    await create_topic(bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(200)]
    await produce(bootstrap, setup.topic, encoded(events))
    log = tmp_path / "service.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "run",
        "--config",
        str(config_path),
        env={**os.environ, **setup.environ},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log.open("ab"),
    )
    try:
        assert await receiver.wait_for(lambda r: len(r.delivered()) >= 30, within=60)
        slow["rate_limit"] = {"per_second": 100, "burst": 1}
        config_path.write_text(yaml.safe_dump(setup.document()), encoding="utf-8")
        process.send_signal(signal.SIGHUP)
        reloaded_at = receiver.received[-1].at
        assert await receiver.wait_for(lambda r: len(r.delivered()) >= 200, within=60)

        before = [r.at for r in receiver.received if r.at < reloaded_at]
        after = [r.at for r in receiver.received if r.at > reloaded_at + 1]
        assert _busiest_second(before) <= 12  # 10/s, burst 1
        assert _busiest_second(after) >= 40, "the new limit never took effect"

        config_path.write_text("channels: [{name: r, url: 'ftp://nowhere'}]\n", encoding="utf-8")
        process.send_signal(signal.SIGHUP)
        more = [event("c", f"v-{i}") for i in range(20)]
        await produce(bootstrap, setup.topic, encoded(more))
        assert await receiver.wait_for(lambda r: len(r.delivered()) >= 220, within=60)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 60)
    assert code == 0
    delivered = [r.delivery_id for r in receiver.delivered()]
    expected = {delivery_id("r", [e["event_id"]]) for e in [*events, *more]}
    assert set(delivered) == expected
    assert len(delivered) == len(expected), "a delivery in flight at a reload was sent twice"
    text = log.read_text()
    assert '"config.reloaded"' in text
    assert '"config.reload_rejected"' in text
    assert "ftp://nowhere" in text  # the problem is named, so the operator can fix it
