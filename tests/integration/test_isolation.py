"""A failing, hanging or slow receiver never slows the others (schedules shortened by config)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from consumer.delivery import delivery_id
from consumer.receiver import Receiver

from .support import (
    RunningService,
    Setup,
    StartService,
    channel,
    committed_to_end,
    create_topic,
    delayed_deliveries,
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


# B beside a misbehaving A is compared with B beside the same A answering at once: the same
# events, channels and process, so the same CPU spent on A's requests, on 2 cores shared with
# the broker, the receiver and other jobs (B alone did less work, and a ratio to it grew with
# the machine's load: 9 s alone against 31 s beside a failing A at a load average of 10).
# "Within a small bound": twice as long plus two seconds. The control runs just before and
# just after (the slower counts): one run on a machine whose load moves is a noisy ruler.
def _bound(control: tuple[float, float]) -> float:
    return max(control) * 2 + 2


async def _parked(setup: Setup, name: str) -> int:
    """How many times channel `name`'s deliveries went onto the delay topics."""
    delayed = await delayed_deliveries(setup.bootstrap, f"{setup.group}.retry")
    return sum(d.channel == name for d in delayed)


def _control(times: tuple[float, float]) -> str:
    return f"{times[0]:.1f}s/{times[1]:.1f}s beside a healthy A (before/after)"


async def _time_beside_healthy(
    bootstrap: str,
    tmp: str,
    count: int,
    running_service: StartService,
    retry: dict[str, Any] = FAST_RETRY,
    **a_options: Any,
) -> float:
    """How long `count` events take to reach B beside an A that answers every request at once."""
    receiver = Receiver({})
    await receiver.start()
    try:
        setup = Setup(
            bootstrap,
            receiver,
            [channel(receiver, "a", **a_options), channel(receiver, "b")],
            {"c": ["a", "b"]},
            retry=dict(retry),
            tmp=tmp,
        )
        await create_topic(bootstrap, setup.topic, 3)
        await produce(bootstrap, setup.topic, encoded(event("c", f"u-{i}") for i in range(count)))
        started = time.monotonic()
        service = running_service(setup.config(), setup.environ)
        assert await receiver.wait_for(
            lambda r: sum(x.channel == "b" for x in r.delivered()) >= count, within=120
        ), f"B has {sum(x.channel == 'b' for x in receiver.delivered())} of {count} (control)"
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
    retry: dict[str, Any] = FAST_RETRY,
) -> tuple[Setup, RunningService, list[dict[str, Any]], float]:
    setup = Setup(
        bootstrap,
        receiver,
        [bad, channel(receiver, "b")],
        {"c": [bad["name"], "b"]},
        retry=dict(retry),
        tmp=tmp,
    )
    await create_topic(bootstrap, setup.topic, 3)
    events = [event("c", f"u-{i}") for i in range(count)]
    await produce(bootstrap, setup.topic, encoded(events))
    started = time.monotonic()
    service = running_service(setup.config(), setup.environ)
    b_ids = {delivery_id("b", [e["event_id"]]) for e in events}
    assert await receiver.wait_for(
        lambda r: {x.delivery_id for x in r.delivered() if x.channel == "b"} >= b_ids, within=120
    ), f"B has {sum(x.channel == 'b' for x in receiver.delivered())} of {count}"
    return setup, service, events, time.monotonic() - started


@pytest.mark.timeout(420)  # two control runs, B beside a failing A, then A recovering
async def test_a_failing_channel_does_not_delay_a_healthy_one_and_recovers(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    # The open circuit, not the backlog bound, moves A's work to the delay topics. B's 5,000
    # must not be parked as its own overflow: at a load average near 10, its lane (sharing
    # the loop with A's held work) judged it could not send them within 5 s and parked them
    # (4,200 in one run), and B took some 30 s in 4 of 7 runs, against 10 to 24 s beside a
    # healthy A. 30 s holds them at 170/s.
    retry = {**FAST_RETRY, "max_backlog_seconds": 30}
    before = await _time_beside_healthy(bootstrap, tmp + "/before", 5000, running_service, retry)
    receiver.answer("a", default=503)
    setup, service, events, with_a_down = await _isolation_run(
        bootstrap, receiver, tmp, 5000, channel(receiver, "a"), running_service, retry
    )
    assert not [r for r in receiver.received if r.channel == "a" and r.status == 200]
    # The input is committed to its end while A is still failing: its work sits on delay topics.
    assert await committed_to_end(setup, within=60), "the input never committed to its end"

    receiver.answer("a", default=200)  # A recovers
    expected_a = {("a", delivery_id("a", [e["event_id"]])) for e in events}
    assert await receiver.wait_for(lambda r: pairs_delivered(r) >= expected_a, within=90), (
        f"{len(expected_a - pairs_delivered(receiver))} of A's deliveries never arrived"
    )
    await service.shutdown()
    after = await _time_beside_healthy(bootstrap, tmp + "/after", 5000, running_service, retry)
    control = (before, after)
    parked = await _parked(setup, "b")
    assert with_a_down <= _bound(control), (
        f"B took {with_a_down:.1f}s, {_control(control)}; B parked {parked} times"
    )
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
    print(
        f"\nhealthy channel: {_control(control)}, {with_a_down:.2f}s beside a failing one "
        f"(B parked {parked} times)"
    )


@pytest.mark.timeout(240)  # the stop waits out requests the receiver never answers
async def test_a_receiver_that_never_answers_does_not_slow_the_others(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    options = {"timeout_seconds": 2, "max_concurrency": 4}
    before = await _time_beside_healthy(
        bootstrap, tmp + "/before", 2000, running_service, **options
    )
    receiver.answer("a", hang=True)
    hanging = channel(receiver, "a", **options)
    setup, service, _, with_hang = await _isolation_run(
        bootstrap, receiver, tmp, 2000, hanging, running_service
    )
    assert await committed_to_end(setup, within=60), "the input never committed to its end"
    await service.shutdown()
    after = await _time_beside_healthy(bootstrap, tmp + "/after", 2000, running_service, **options)
    control = (before, after)
    assert with_hang <= _bound(control), f"B took {with_hang:.1f}s, {_control(control)}"
    print(f"\nhealthy channel: {_control(control)}, {with_hang:.2f}s beside a hanging one")


async def test_a_slow_rate_limit_does_not_slow_an_unlimited_channel(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    # The control's A has no limit: all 500 of its requests cost what B's do.
    before = await _time_beside_healthy(bootstrap, tmp + "/before", 500, running_service)
    slow = channel(receiver, "a", rate_limit={"per_second": 5, "burst": 5})
    setup, service, _, with_slow = await _isolation_run(
        bootstrap, receiver, tmp, 500, slow, running_service
    )
    assert await committed_to_end(setup, within=60), "the input never committed to its end"
    a_sent = len([r for r in receiver.received if r.channel == "a"])
    await service.shutdown()
    assert a_sent < 500, "the limited channel finished: the test proves nothing"
    after = await _time_beside_healthy(bootstrap, tmp + "/after", 500, running_service)
    control = (before, after)
    assert with_slow <= _bound(control), f"B took {with_slow:.1f}s, {_control(control)}"
    print(f"\nunlimited channel: {_control(control)}, {with_slow:.2f}s beside a 5/s one")


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
        assert await committed_to_end(setup, within=60), "the input never committed to its end"
    finally:
        await asyncio.wait_for(service.shutdown(), 60)
