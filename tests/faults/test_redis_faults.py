"""The fleet's limits when Redis misbehaves: three real `webhook-consumer run` replicas, a real
redis-server of the test's own behind a loopback fault proxy (a partition without resets, a
restart that empties it), a lease holder killed, a receiver that stalls and then answers a
burst. Each scenario asserts, and reports at the end of `make faults`:

- the busiest second the receiver saw (by its own clock, in its own process) against the
  limit: at most limit + burst + 10 % of the limit;
- how long after the heal every replica was back on Redis;
- leases left in Redis once the work is done (none; a killed holder's gone by its expiry);
- deliveries lost and dead-lettered (none).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.fleet import busiest_second
from tests.integration.receiver_process import Arrival, delivered
from tests.support.duplicates import LISTENER_POLL_MS

from .limits_fleet import COMMIT_INTERVAL_MS, Limits, LimitsFleet, busiest, limits_fleet, timestamp

# Three replicas forming a group, 16 s of work at the limit, a fault of a few seconds, and
# waits of up to 120 s for every delivery (under a minute each on a quiet machine).
pytestmark = pytest.mark.timeout(300)

LIMITS = Limits(per_second=50, burst=50, cap=8)
EVENTS = 800  # 16 s at the limit: the channel is busy through every fault
SENDING = 150  # requests received before the fault comes: 2 s of sending after the burst
OUTAGE_SECONDS = 6.0


async def under_way(fleet: LimitsFleet, *replicas: int) -> None:
    """These replicas started, the group formed and counted, the work produced and flowing."""
    await fleet.start(*replicas)
    await fleet.counted(len(replicas), *replicas)
    await fleet.produce(EVENTS)
    await fleet.receiver_until(lambda a: len(a) >= SENDING, 30, "under way")


async def wound_up(fleet: LimitsFleet) -> tuple[list[Arrival], int, int]:
    """Once every delivery arrived: the live leases left 3 s later (a lease's expiry is 8 s:
    any left was left behind), every replica stopped cleanly (exit 0), what arrived in all
    (read after the stops, so a late duplicate counts too), and the dead letters written."""
    await fleet.all_delivered()
    with contextlib.suppress(AssertionError):  # reported as leaked, below
        await fleet.no_lease_left(within=3)
    leaked = await fleet.live_leases()
    assert await fleet.stop() == [0] * len(fleet.replicas)
    return await fleet.receiver.arrivals(), leaked, await fleet.dead_letters()


def duplicates(arrivals: list[Arrival]) -> int:
    """2xx answers beyond the first per delivery id: what a receiver had to drop."""
    answered = Counter(a.delivery_id for a in arrivals if 200 <= a.status < 300)
    return sum(answered.values()) - len(answered)


def figures(
    fleet: LimitsFleet,
    arrivals: list[Arrival],
    report: Callable[[str], None],
    *,
    back: float | None,
    leaked: int,
    dead_letters: int,
    allowed_duplicates: int = 0,
) -> None:
    """Report the scenario's figures, then assert them. Nothing is sent twice unless the
    scenario kills a replica (`allowed_duplicates`, argued where it is given): no scenario
    moves partitions mid-request without a drain, and the receiver answers within the
    timeout."""
    # Every arrival, for whoever reads a failure: receiver time, send stamp, delivery, status.
    (fleet.folder / "arrivals.json").write_bytes(orjson.dumps(arrivals))
    most, at = busiest(fleet.measured(arrivals))
    most_sent = busiest_second([a.sent_ms / 1000 for a in fleet.measured(arrivals)])
    # The work's first second holds its burst; from the fault on, what the fault costs.
    during = busiest_second([a.at for a in arrivals if a.at >= fleet.faulted])
    lost = len(fleet.expected - delivered(arrivals))
    limits = fleet.limits
    fallbacks = len(fleet.events("rate_limiter.fallback"))
    report(
        f"busiest second {most} received ({most_sent} sent) / limit {limits.per_second:g} "
        f"(burst {limits.burst}, at most {limits.most_in_a_second:g}), {at:.1f} s into the "
        f"{arrivals[-1].at - fleet.since:.0f} s of work; from the fault on {during}; "
        + ("" if back is None else f"back on Redis {back:.1f} s after the heal; ")
        + f"leases leaked {leaked}; lost {lost}; dead-lettered {dead_letters}; "
        f"duplicates {duplicates(arrivals)} (at most {allowed_duplicates}); "
        f"fallbacks logged {fallbacks}"
    )
    assert most <= limits.most_in_a_second, f"{most} received in one second"
    assert most_sent <= limits.most_in_a_second, f"{most_sent} sent in one second"
    assert leaked == 0
    assert lost == 0, f"{lost} deliveries never answered 2xx"
    assert dead_letters == 0
    assert duplicates(arrivals) <= allowed_duplicates
    assert all(a.status != 401 for a in arrivals), "a signature did not verify"


async def test_a_partition_that_heals(
    bootstrap: str, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """Redis unreachable for 6 s, no reset (a black hole): every replica falls back to its
    share, and all are back on Redis within seconds of the heal, leaving no lease behind."""
    async with limits_fleet(bootstrap, tmp_path, LIMITS) as fleet:
        await under_way(fleet, 0, 1, 2)
        cut = time.time()
        fleet.fault_begins()
        await fleet.proxy.mode("blackhole")
        await fleet.fell_back(0, 1, 2, since=cut)
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.time() - cut)))  # the partition
        healed = time.time()
        await fleet.proxy.mode("pass")
        back = await fleet.recovered(0, 1, 2, since=healed)
        arrivals, leaked, dead = await wound_up(fleet)
    figures(fleet, arrivals, report, back=back, leaked=leaked, dead_letters=dead)
    assert back < 5  # the probe backs off to 2 s (+ 20 % jitter), plus one 1 s timeout


async def test_a_partition_while_a_replica_joins(
    bootstrap: str, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """Two replicas run; Redis becomes unreachable; a third starts meanwhile (as an
    autoscaler adds one). No replica ever divides by fewer than the replicas there are: the
    new one assumes the input topic's partitions until the group is counted, the others keep
    their count through the rebalance."""
    async with limits_fleet(bootstrap, tmp_path, LIMITS) as fleet:
        await under_way(fleet, 0, 1)
        cut = time.time()
        fleet.fault_begins()
        await fleet.proxy.mode("blackhole")
        await fleet.fell_back(0, 1, since=cut)
        await fleet.start(2)
        await fleet.counted(3, 0, 1, 2)  # counted from Kafka while Redis is away
        healed = time.time()
        await fleet.proxy.mode("pass")
        back = await fleet.recovered(0, 1, 2, since=healed)
        arrivals, leaked, dead = await wound_up(fleet)
        # From the partition on (before it, two replicas formed a group: one of them may
        # rightly have counted itself alone for a moment).
        counts = {
            r.name: [
                e["replicas"] for e in r.events("rate_limiter.replicas") if timestamp(e) >= cut
            ]
            for r in fleet.replicas
        }
    report(f"counts logged from the partition on: {counts}")
    # The join revokes partitions while Redis is away: a replica's fallback share of the rate
    # may not empty its queue within the revoke grace, so the commit leaves out the requests
    # then out, and their next owner sends them again. Only the two replicas that ran before
    # the join revoke anything, each with at most its fallback share of the cap out at once
    # (cap // 2): the cap in all. Nothing still waiting for a permit is sent after a revoke.
    figures(
        fleet,
        arrivals,
        report,
        back=back,
        leaked=leaked,
        dead_letters=dead,
        allowed_duplicates=LIMITS.cap,
    )
    assert all(min(seen, default=2) >= 2 for seen in counts.values()), counts  # never 1 or 0
    assert back < 5


async def test_redis_restarted_empty(
    bootstrap: str, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """Redis dies and comes back empty (no persistence): its rate state, leases and circuit
    are gone. The replicas fall back, come back, and the first second on the empty Redis
    grants no burst on top of what the fallbacks just sent."""
    async with limits_fleet(bootstrap, tmp_path, LIMITS) as fleet:
        await under_way(fleet, 0, 1, 2)
        cut = time.time()
        fleet.fault_begins()
        fleet.redis.kill()
        await fleet.fell_back(0, 1, 2, since=cut)
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS / 2 - (time.time() - cut)))  # the outage
        restarted = time.time()
        fleet.redis.start()  # same port, nothing in it
        back = await fleet.recovered(0, 1, 2, since=restarted)
        arrivals, leaked, dead = await wound_up(fleet)
    figures(fleet, arrivals, report, back=back, leaked=leaked, dead_letters=dead)
    assert back < 5


async def test_a_lease_holder_killed(
    bootstrap: str, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """The receiver holds its requests, so the fleet's cap of leases is out; the replica
    holding most of them is killed (SIGKILL: no give-back) and comes back under its name.
    Its leases are gone once their expiry passed, not later, and never counted twice."""
    async with limits_fleet(bootstrap, tmp_path, LIMITS) as fleet:
        await under_way(fleet, 0, 1, 2)
        await fleet.receiver.script("limited", hold=True)
        held = len(await fleet.receiver.arrivals())
        cap = LIMITS.cap
        await fleet.receiver_until(lambda a: len(a) >= held + cap, 30, "the cap's requests held")
        # A lease's holder is "<host>:<pid>:<random>:<n>" (consumer/fleet/limits.py).
        host = socket.gethostname()
        holders = {r.name: await fleet.live_leases(f"{host}:{r.pid}:") for r in fleet.replicas}
        victim = max(fleet.replicas, key=lambda r: holders[r.name])
        prefix = f"{host}:{victim.pid}:"
        killed_at = asyncio.get_running_loop().time()
        fleet.fault_begins()
        await victim.kill()
        await victim.start()  # the StatefulSet restarts the pod under its name
        await fleet.receiver.script("limited", hold=False)
        await fleet.receiver.release()
        # Gone by their expiry after the kill: 2 s beyond it for the polls and a loaded
        # machine.
        loop = asyncio.get_running_loop()
        left = LIMITS.lease_ttl + 2 - (loop.time() - killed_at)
        await fleet.no_lease_left(left, holder=prefix)
        gone_after = loop.time() - killed_at
        arrivals, leaked, dead = await wound_up(fleet)
    report(
        f"killed holder of {holders[victim.name]} of {cap} leases; its leases gone "
        f"{gone_after:.1f} s after the kill (expiry {LIMITS.lease_ttl:.1f} s)"
    )
    # What the pod that takes the victim's place can send again: the requests the victim
    # had out, held by the receiver (one per lease it held) and recorded 2xx on arrival;
    # and what it finished before the hold began but had not committed yet, should the
    # kill come within a commit interval and a poll of that (at most the whole limit's rate
    # over that window). Nothing else finished between the hold and the kill.
    window = (COMMIT_INTERVAL_MS + LISTENER_POLL_MS) / 1000
    figures(
        fleet,
        arrivals,
        report,
        back=None,
        leaked=leaked,
        dead_letters=dead,
        allowed_duplicates=holders[victim.name] + math.ceil(LIMITS.per_second * window),
    )
    assert holders[victim.name] >= 1


async def test_a_receiver_that_stalls_then_answers_a_burst(
    bootstrap: str, tmp_path: Path, report: Callable[[str], None]
) -> None:
    """The receiver holds every request for 2 s, then answers them all at once. The requests
    that waited for leases meanwhile took their permits long before: they take fresh ones,
    and go out at the rate, not in a bunch (26 in a second against 11 allowed, before)."""
    # A timeout well beyond the stall: held requests are slow answers, not failures.
    limits = Limits(per_second=20, burst=1, cap=16, timeout=15)
    async with limits_fleet(bootstrap, tmp_path, limits) as fleet:
        await fleet.start(0, 1, 2)
        await fleet.counted(3, 0, 1, 2)
        await fleet.receiver.script("limited", hold=True)  # from the first request
        fleet.fault_begins()
        await fleet.produce(300)  # 15 s at the limit
        await fleet.receiver_until(lambda a: len(a) >= limits.cap, 30, "the cap held")
        await asyncio.sleep(2)  # the stall, as scripted
        await fleet.receiver.script("limited", hold=False)
        await fleet.receiver.release()
        arrivals, leaked, dead = await wound_up(fleet)
    figures(fleet, arrivals, report, back=None, leaked=leaked, dead_letters=dead)
