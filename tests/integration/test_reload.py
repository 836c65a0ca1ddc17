"""SIGHUP on a running `webhook-consumer run`: a new limit takes effect with nothing lost or
sent twice, and an invalid file leaves the running config in force."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import yaml

from consumer.delivery import delivery_id
from consumer.receiver import Receiver
from tests.support.processes import Launch, run_args
from tests.support.timing import busiest_second, most_in_a_second, sent_at, steady_rate

from .support import Setup, channel, create_topic, encoded, event, produce, write_config

# Rates are read from the sender's own stamps (each body's `timestamp`, ms), never from arrival
# times in this process, whose loop also runs the receiver; a second's worth allows for the
# sender running late after its slot (tests/support/timing.py).


async def test_sighup_applies_a_new_rate_limit_and_keeps_the_old_config_when_invalid(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    slow = channel(receiver, "r", rate_limit={"per_second": 10, "burst": 1})
    setup = Setup(bootstrap, receiver, [slow], {"c": ["r"]}, tmp=str(tmp_path), log_level="info")
    setup.retry["max_backlog_seconds"] = 600  # nothing parked: the lane's own pace is measured
    config_path = write_config(setup, tmp_path)
    await create_topic(bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(200)]
    await produce(bootstrap, setup.topic, encoded(events))
    service = await launch(run_args(config_path), setup.environ, tmp_path / "log").start()

    assert await receiver.wait_for(lambda r: len(r.delivered()) >= 30, within=60)
    slow["rate_limit"] = {"per_second": 100, "burst": 1}
    config_path.write_text(yaml.safe_dump(setup.document()), encoding="utf-8")
    reloaded_at = time.time()  # the sender's stamps are wall-clock: compare like with like
    service.send_signal(signal.SIGHUP)
    assert await service.log.wait_for("config.reloaded", within=30), service.log.tail()
    assert await receiver.wait_for(lambda r: len(r.delivered()) >= 200, within=60)
    stamps = sent_at(r.body for r in receiver.delivered())
    before = [t for t in stamps if t < reloaded_at]
    after = [t for t in stamps if t > reloaded_at + 1]  # a second for the reload to land
    assert busiest_second(before) <= most_in_a_second(10, 1), "the first limit did not hold"
    assert busiest_second(after) >= 40, "the new limit never took effect"

    # An invalid file: rejected, and the limit in force (100/s) goes on pacing new work; a
    # reload that fell back to defaults would send unlimited, one back to the first file 10/s.
    config_path.write_text("channels: [{name: r, url: 'ftp://nowhere'}]\n", encoding="utf-8")
    service.send_signal(signal.SIGHUP)
    assert await service.log.wait_for("config.reload_rejected", within=30), service.log.tail()
    more = [event("c", f"v-{i}") for i in range(300)]
    await produce(bootstrap, setup.topic, encoded(more))
    assert await receiver.wait_for(lambda r: len(r.delivered()) >= 500, within=60)
    assert await service.stop() == 0, service.log.tail()

    later = {delivery_id("r", [e["event_id"]]) for e in more}
    stamps = sent_at(r.body for r in receiver.delivered() if r.delivery_id in later)
    busiest, steady = busiest_second(stamps), steady_rate(stamps, burst=1)
    print(f"\nafter the rejected reload: busiest second {busiest}, mean {steady:.1f}/s (100/s)")
    assert busiest <= most_in_a_second(100, 1), f"{busiest} sent in one second"
    # The mean over the 3 s the 300 slots span: lateness moves only its two ends, so within
    # 100 x 3 / (3 +- 0.3); a fallback to defaults is unlimited, to the first file 10/s.
    assert 80 <= steady <= 115, f"{steady:.0f}/s after the bad reload"
    delivered = [r.delivery_id for r in receiver.delivered()]
    expected = {delivery_id("r", [e["event_id"]]) for e in [*events, *more]}
    assert set(delivered) == expected
    assert len(delivered) == len(expected), "a delivery in flight at a reload was sent twice"
    rejected = service.log.events("config.reload_rejected")
    assert "ftp://nowhere" in str(rejected)  # the problem is named, so the operator can fix it
