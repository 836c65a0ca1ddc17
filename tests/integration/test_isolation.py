"""A failing, hanging or slow receiver never slows the others (schedules shortened by config)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from consumer.delivery import delivery_id
from consumer.receiver import Receiver

from .support import (
    RunningService,
    Setup,
    StartService,
    channel,
    committed_to_end,
    create_topic,
    encoded,
    event,
    pairs_delivered,
    produce,
)

FAST_RETRY = {
    "schedule_seconds": [2, 4, 8, 16],
    # Short, so a hanging channel parks its overflow within seconds, but not so short that the
    # healthy channel parks its own start-up burst while the process is busy holding the
    # failing channel's work (it did in CI at 1 s: the bound is in the lane's own seconds).
    "max_backlog_seconds": 5,
    # Short enough for a test, long enough that the failing channel's held deliveries are
    # not rewritten every second: each failed probe makes every held delivery wait again.
    "circuit_breaker": {"failures": 5, "cooldown_seconds": 4, "max_cooldown_seconds": 8},
}


# "Within a small bound of its time alone": twice as long plus two seconds, on 2 cores shared
# with the broker and the receiver.
def _bound(alone: float) -> float:
    return alone * 2 + 2


async def _time_alone(
    bootstrap: str, tmp: str, count: int, running_service: StartService, **healthy: Any
) -> float:
    """How long `count` events take to reach a healthy channel with nothing else going on."""
    receiver = Receiver({})
    await receiver.start()
    try:
        setup = Setup(
            bootstrap,
            receiver,
            [channel(receiver, "b", **healthy)],
            {"c": ["b"]},
            retry=dict(FAST_RETRY),
            tmp=tmp,
        )
        await create_topic(bootstrap, setup.topic, 3)
        await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(count)))
        started = time.monotonic()
        service = running_service(setup.config(), setup.environ)
        assert await receiver.wait_for(lambda r: len(r.delivered()) >= count, within=60)
        elapsed = time.monotonic() - started
        await service.shutdown()
        return elapsed
    finally:
        await receiver.stop()


async def _isolation_run(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    count: int,
    bad: dict[str, Any],
    running_service: StartService,
) -> tuple[Setup, RunningService, list[dict[str, Any]], float]:
    setup = Setup(
        bootstrap,
        receiver,
        [bad, channel(receiver, "b")],
        {"c": [bad["name"], "b"]},
        retry=dict(FAST_RETRY),
        tmp=tmp,
    )
    await create_topic(bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(count)]
    await produce(bootstrap, setup.topic, encoded(events))
    started = time.monotonic()
    service = running_service(setup.config(), setup.environ)
    b_ids = {delivery_id("b", [e["event_id"]]) for e in events}
    assert await receiver.wait_for(
        lambda r: {x.delivery_id for x in r.delivered() if x.channel == "b"} >= b_ids, within=60
    )
    return setup, service, events, time.monotonic() - started


async def test_a_failing_channel_does_not_delay_a_healthy_one_and_recovers(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    alone = await _time_alone(bootstrap, tmp + "/alone", 5000, running_service)
    receiver.answer("a", default=503)
    setup, service, events, with_a_down = await _isolation_run(
        bootstrap, receiver, tmp, 5000, channel(receiver, "a"), running_service
    )
    assert not [r for r in receiver.received if r.channel == "a" and r.status == 200]
    # The input is committed to its end while A is still failing: its work sits on delay topics.
    assert await committed_to_end(setup, within=30)
    assert with_a_down <= _bound(alone), f"B took {with_a_down:.1f}s, {alone:.1f}s alone"

    receiver.answer("a", default=200)  # A recovers
    expected_a = {("a", delivery_id("a", [e["event_id"]])) for e in events}
    assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected_a, within=90), (
        f"{len(expected_a - pairs_delivered(receiver))} of A's deliveries never arrived"
    )
    await service.shutdown()
    # Attempt numbers count real requests, under one delivery id: every delivery that met a
    # 503 arrives with the next number. Those the open circuit held back never met one.
    failures: dict[str, int] = {}
    for r in receiver.received:
        if r.channel == "a" and r.status == 503:
            failures[r.delivery_id] = failures.get(r.delivery_id, 0) + 1
    arrived = {r.delivery_id: r.attempt for r in receiver.delivered() if r.channel == "a"}
    assert all(arrived[d] == n + 1 for d, n in failures.items() if d in arrived)
    retried = [d for d in arrived if d in failures]
    assert retried, "no delivery of A was ever retried"
    print(
        f"\nA: {len(retried)} deliveries arrived on a later attempt, "
        f"{len(arrived) - len(retried)} were held by the open circuit without a request"
    )
    print(f"\nhealthy channel: {alone:.2f}s alone, {with_a_down:.2f}s beside a failing one")


async def test_a_receiver_that_never_answers_does_not_slow_the_others(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    alone = await _time_alone(bootstrap, tmp + "/alone", 2000, running_service)
    receiver.answer("a", hang=True)
    hanging = channel(receiver, "a", timeout_seconds=2, max_concurrency=4)
    setup, service, _, with_hang = await _isolation_run(
        bootstrap, receiver, tmp, 2000, hanging, running_service
    )
    assert await committed_to_end(setup, within=30)
    await service.shutdown()
    assert with_hang <= _bound(alone), f"B took {with_hang:.1f}s, {alone:.1f}s alone"
    print(f"\nhealthy channel: {alone:.2f}s alone, {with_hang:.2f}s beside a hanging one")


async def test_a_slow_rate_limit_does_not_slow_an_unlimited_channel(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    alone = await _time_alone(bootstrap, tmp + "/alone", 500, running_service)
    slow = channel(receiver, "a", rate_limit={"per_second": 5, "burst": 5})
    setup, service, _, with_slow = await _isolation_run(
        bootstrap, receiver, tmp, 500, slow, running_service
    )
    assert await committed_to_end(setup, within=30)
    a_sent = len([r for r in receiver.received if r.channel == "a"])
    await service.shutdown()
    assert a_sent < 500, "the limited channel finished: the test proves nothing"
    assert with_slow <= _bound(alone), f"B took {with_slow:.1f}s, {alone:.1f}s alone"
    print(f"\nunlimited channel: {alone:.2f}s alone, {with_slow:.2f}s beside a 5/s one")


async def test_circuit_breaker_opens_probes_and_closes(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    cooldown = 1.5
    breaker = {"failures": 3, "cooldown_seconds": cooldown}
    single = channel(receiver, "a", max_concurrency=1)
    setup = Setup(
        bootstrap,
        receiver,
        [single],
        {"c": ["a"]},
        tmp=tmp,
        retry={
            "quick_attempts": 1,
            "schedule_seconds": [1, 1, 1, 1, 1, 1],
            "circuit_breaker": breaker,
        },
    )
    receiver.answer("a", default=503)
    await create_topic(bootstrap, setup.topic, 1)
    await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(20)))
    service = running_service(setup.config(), setup.environ)
    assert await receiver.wait_for(lambda r: len(r.received) >= 4, within=30)
    receiver.answer("a", default=200)
    assert await receiver.wait_for(lambda r: len(r.delivered()) >= 20, within=60)
    await service.shutdown()
    times = [r.at for r in receiver.received]
    # Three failures open the circuit: no request for the whole cool-down, then one probe.
    assert times[3] - times[2] >= cooldown * 0.9, [round(t - times[0], 2) for t in times[:6]]
    probe_failed = receiver.received[3].status == 503
    if probe_failed:  # reopened: again silence for a cool-down before the next probe
        assert times[4] - times[3] >= cooldown * 0.9
    assert len(receiver.delivered()) == 20


async def test_input_keeps_moving_when_one_channel_is_down(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    """The quick attempts and breaker never hold a partition: offsets reach the end."""
    receiver.answer("a", default=503)
    setup = Setup(
        bootstrap, receiver, [channel(receiver, "a")], {"c": ["a"]}, tmp=tmp, retry=dict(FAST_RETRY)
    )
    await create_topic(bootstrap, setup.topic, 3)
    await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(300)))
    service = running_service(setup.config(), setup.environ)
    try:
        assert await committed_to_end(setup, within=30)
    finally:
        await asyncio.wait_for(service.shutdown(), 60)
