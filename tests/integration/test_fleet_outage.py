"""Redis stops for 5 s under three running `webhook-consumer run` processes: deliveries go on
at each replica's share of the limit, and the shared limit holds again once Redis is back."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from consumer.receiver import Receiver
from tests.support.polling import until
from tests.support.processes import Launch

from .admin_port import metric
from .fleet import ReplicaProcesses, busiest_second, private_redis, wall_to_monotonic
from .support import Setup, channel, create_topic, encoded, event, produce, write_config

REPLICAS = 3
OUTAGE_SECONDS = 5.0
AVAILABLE = "webhook_consumer_redis_available"


async def _gauges(ports: list[int]) -> list[float | None]:
    """webhook_consumer_redis_available as each replica's /metrics shows it now."""
    return [await metric(f"http://127.0.0.1:{port}", AVAILABLE) for port in ports]


async def test_deliveries_go_on_at_the_replica_share_while_redis_is_down(
    bootstrap: str, receiver: Receiver, tmp_path: Path, launch: Launch
) -> None:
    rate, burst, total = 30, 30, 1500
    with private_redis(tmp_path / "redis") as redis:
        setup = Setup(
            bootstrap,
            receiver,
            [channel(receiver, "shared", rate_limit={"per_second": rate, "burst": burst})],
            {"c": ["shared"]},
            retry={"max_backlog_seconds": 60},  # no parking: the receiver sees the limit alone
            log_level="info",
            tmp=str(tmp_path),
        )
        # 1 s, not 0.5: on 2 shared cores a start-up can stall an event loop that long, which
        # would count as an outage of its own.
        setup.rate_limiter = {"backend": "redis", "url": redis.url, "timeout_seconds": 1}
        config = write_config(setup, tmp_path)
        await create_topic(bootstrap, setup.topic, REPLICAS)
        await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(total)))
        replicas = ReplicaProcesses(launch, config, setup.environ, tmp_path, REPLICAS)
        logs = replicas.logs
        await replicas.start()
        try:
            # The group has settled, and every replica counted its members (not merely assumed
            # as many as the topic has partitions).
            assert await until(
                lambda: all(
                    [(e["replicas"], e["source"]) for e in log.events("rate_limiter.replicas")][-1:]
                    == [(REPLICAS, "group")]
                    for log in logs
                ),
                within=90,
                every=0.2,  # reading three logs: light on the receiver's process
            )
            assert len(receiver.received) < total - rate * 15, "too little left to see"
            ports = [e["admin_port"] for log in logs for e in log.events("service.started")]
            assert len(ports) == REPLICAS
            assert await _gauges(ports) == [1.0] * REPLICAS  # Redis answers
            redis.kill()
            killed_at = time.monotonic()
            assert await until(
                lambda: all(log.events("rate_limiter.fallback") for log in logs), 10, every=0.2
            )
            during = await _gauges(ports)  # scraped while Redis is away
            await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - killed_at))  # the outage
            redis.start()  # same port, empty: the limit starts afresh
            restarted_at = time.monotonic()
            assert await until(
                lambda: all(log.events("rate_limiter.recovered") for log in logs), 30, every=0.2
            )
            after = await _gauges(ports)
            assert await receiver.wait_for(
                lambda r: len({x.delivery_id for x in r.delivered()}) >= total, within=120
            )
        finally:
            statuses = await replicas.stop()
    assert statuses == [0] * REPLICAS
    # /metrics says what the limits know: 0 on every replica during the outage, 1 after.
    assert during == [0.0] * REPLICAS
    assert after == [1.0] * REPLICAS

    fallbacks = [e for log in logs for e in log.events("rate_limiter.fallback")]
    recoveries = [e for log in logs for e in log.events("rate_limiter.recovered")]
    assert len(fallbacks) == REPLICAS  # once per replica
    assert len(recoveries) == REPLICAS
    assert {e["divisor"] for e in fallbacks} == {REPLICAS}
    fell_back = max(wall_to_monotonic(e["timestamp"]) for e in fallbacks)
    recovered = max(wall_to_monotonic(e["timestamp"]) for e in recoveries)

    times = sorted(r.at for r in receiver.received)
    during = [t for t in times if fell_back <= t < restarted_at]
    # Back on Redis, each replica first sends what its fallback had reserved: at most one
    # permit per worker (16) at its share of the rate. Then the shared limit holds again,
    # after the burst of a Redis that restarted empty.
    drained = recovered + 16 / (rate / REPLICAS)
    switching = [t for t in times if restarted_at <= t < drained + 1]
    after = [t for t in times if t >= drained + 1]
    after_rate = len(after) / (after[-1] - after[0])
    stall = max(b - a for a, b in itertools.pairwise(times) if killed_at - 1 <= a <= killed_at + 2)
    outage_rate = len(during) / (restarted_at - fell_back)
    print(
        f"\nfell back {fell_back - killed_at:.2f} s after the kill (longest gap in deliveries "
        f"then {stall:.2f} s); {outage_rate:.1f}/s during the outage (busiest second "
        f"{busiest_second(during)}); recovered {recovered - restarted_at:.2f} s after the "
        f"restart (busiest second while switching back {busiest_second(switching)}); "
        f"then {after_rate:.1f}/s, busiest second {busiest_second(after)}"
    )
    assert fell_back - killed_at < 2
    # Each replica at a third of the rate: together the configured rate, not three times it.
    assert rate * 0.7 <= outage_rate <= rate * 1.3
    assert busiest_second(during) <= rate + burst
    assert busiest_second(after) <= rate + burst
    assert abs(after_rate - rate) <= rate * 0.15  # one limit again, not Redis's plus shares
