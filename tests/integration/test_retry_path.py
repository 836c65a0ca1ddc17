"""The retry path under real faults (issue 7), on a real broker and a real receiver.

Rounds count real attempts only, an open circuit waits without using them, delay topics
belong to one deployment, parking is paced, and due times are clamped to the topic's level.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from consumer.deadletter import DeadLetter, Reason, SourceRef
from consumer.delaypath import (
    GROUP_HEADER,
    DelayedDelivery,
    delay_levels,
    delay_topics,
    header,
    headers_for,
)
from consumer.delivery import delivery_id
from consumer.listener import DUE_SLACK_MS
from consumer.receiver import Receiver
from tests.support.timing import busiest_window, most_in_a_second, sent_at

from .support import (
    Setup,
    StartService,
    channel,
    committed_offsets,
    create_topic,
    delay_topics_named,
    delayed_deliveries,
    encoded,
    event,
    group_committed_to_end,
    produce,
    read_all,
    record_count,
    wait_delayed_count,
    wait_record_count,
)

RecordProperty = Callable[[str, object], None]


async def _events(setup: Setup, count: int, campaign: str = "c") -> list[dict[str, Any]]:
    """`count` events on the setup's input topic, created with 3 partitions."""
    await create_topic(setup.bootstrap, setup.topic, 3)
    events = [event(campaign, f"u-{i}") for i in range(count)]
    await produce(setup.bootstrap, setup.topic, encoded(events))
    return events


def _ids(channel_name: str, events: list[dict[str, Any]]) -> set[str]:
    return {delivery_id(channel_name, [e["event_id"]]) for e in events}


def _delivered_ids(receiver: Receiver, channel_name: str) -> set[str]:
    return {r.delivery_id for r in receiver.delivered() if r.channel == channel_name}


def _requests(receiver: Receiver, channel_name: str) -> Counter[str]:
    """Requests the receiver saw per delivery id, whatever it answered."""
    return Counter(r.delivery_id for r in receiver.received if r.channel == channel_name)


def _duplicates(receiver: Receiver, channel_name: str) -> int:
    """2xx answers beyond the first for the same delivery id."""
    delivered = [r.delivery_id for r in receiver.delivered() if r.channel == channel_name]
    return len(delivered) - len(set(delivered))


async def _letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(r.value) for r in await read_all(bootstrap, topic)]


async def _delay_records(bootstrap: str, prefix: str) -> list[Any]:
    """Every record on every delay topic under `prefix`."""
    records = []
    for topic in await delay_topics_named(bootstrap, prefix):
        records.extend(await read_all(bootstrap, topic, within=60))
    return records


async def _delay_record_count(bootstrap: str, prefix: str) -> int:
    topics = await delay_topics_named(bootstrap, prefix)
    return sum([await record_count(bootstrap, t) for t in topics])


def _attempt_numbers_count_requests(receiver: Receiver, channel_name: str) -> None:
    """Under one delivery id, X-gio-attempt numbers the real requests 1, 2, 3, ..."""
    numbers: dict[str, list[int]] = {}
    for r in receiver.received:
        if r.channel == channel_name:
            numbers.setdefault(r.delivery_id, []).append(r.attempt)
    wrong = {d: n for d, n in numbers.items() if sorted(n) != list(range(1, len(n) + 1))}
    assert not wrong, f"{len(wrong)} ids numbered otherwise, e.g. {next(iter(wrong.items()))}"


# 1. An outage shorter than the schedule ------------------------------------------------------

OUTAGE_SECONDS = 40.0


@pytest.mark.timeout(240)  # a 40 s outage, then a 62 s schedule to recover within
async def test_an_outage_shorter_than_the_schedule_costs_no_dead_letter(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    record_property: RecordProperty,
    running_service: StartService,
) -> None:
    schedule = [2, 4, 8, 16, 32]  # 62 s
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        tmp=tmp,
        retry={
            "schedule_seconds": schedule,
            "circuit_breaker": {"failures": 5, "cooldown_seconds": 2, "max_cooldown_seconds": 16},
        },
    )
    config = setup.config()
    receiver.answer("a", default=503)
    events = await _events(setup, 2000)
    expected = _ids("a", events)
    started = time.monotonic()
    service = running_service(config, setup.environ)
    try:
        assert await receiver.wait_for(lambda r: bool(r.received), within=60)
        # The outage's scripted length, counted from its first request: not a condition.
        await asyncio.sleep(receiver.received[0].at + OUTAGE_SECONDS - time.monotonic())
        receiver.answer("a", default=200)
        assert await receiver.wait_for(lambda r: _delivered_ids(r, "a") >= expected, within=180), (
            f"{len(expected - _delivered_ids(receiver, 'a'))} deliveries never arrived"
        )
        elapsed = max(r.at for r in receiver.delivered()) - started
    finally:
        await service.shutdown()

    dead_letters = await record_count(bootstrap, setup.dead_letter_topic)
    assert dead_letters == 0, f"{dead_letters} dead letters for an outage shorter than the schedule"
    assert _duplicates(receiver, "a") == 0
    requests = _requests(receiver, "a")
    assert set(requests) == expected
    arrived = {r.delivery_id: r.attempt for r in receiver.delivered()}
    wrong = {d: (arrived[d], n) for d, n in requests.items() if arrived[d] != n}
    assert not wrong, f"{len(wrong)} ids whose 2xx attempt is not their request count: {wrong}"
    _attempt_numbers_count_requests(receiver, "a")
    assert max(requests.values()) <= config.retry.quick_attempts + len(schedule)

    delay_records = await _delay_record_count(bootstrap, config.kafka.retry_topic_prefix)
    delayed = await delayed_deliveries(bootstrap, config.kafka.retry_topic_prefix)
    sat_out = {d.delivery_id for d in delayed}
    assert sat_out >= expected, f"{len(expected - sat_out)} never sat the outage out on Kafka"
    figures = {
        "deliveries_arrived": len(arrived),
        "dead_letters": dead_letters,
        "requests_per_delivery_mean": round(sum(requests.values()) / len(requests), 3),
        "requests_per_delivery_max": max(requests.values()),
        "elapsed_seconds": round(elapsed, 1),
        "delay_records_written": delay_records,
        "delayed_deliveries_written": len(delayed),
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\n{OUTAGE_SECONDS:.0f} s outage, schedule {schedule}: {figures}")


# 2. An outage longer than the schedule -------------------------------------------------------


async def test_a_receiver_down_for_good_gets_exactly_the_scheduled_attempts(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    schedule = [1, 2, 4]
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        tmp=tmp,
        retry={
            "schedule_seconds": schedule,
            "circuit_breaker": {"failures": 1_000_000, "cooldown_seconds": 1},
        },
    )
    config = setup.config()
    receiver.answer("a", default=503)
    events = await _events(setup, 200)
    service = running_service(config, setup.environ)
    try:
        assert await wait_record_count(bootstrap, setup.dead_letter_topic, len(events), 90)
    finally:
        await service.shutdown()

    letters = await _letters(bootstrap, setup.dead_letter_topic)
    assert sorted(str(x.delivery_id) for x in letters) == sorted(_ids("a", events))
    requests = _requests(receiver, "a")
    quick = config.retry.quick_attempts
    for letter in letters:
        assert letter.limit == "schedule", letter
        assert (letter.reason.kind, letter.reason.status) == ("http_status", 503), letter
        assert letter.rounds == len(schedule), letter
        assert letter.attempts == quick + len(schedule), letter
        assert requests[str(letter.delivery_id)] == letter.attempts, letter
    _attempt_numbers_count_requests(receiver, "a")


async def test_max_age_ends_what_the_open_circuit_kept_waiting(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    schedule = [1, 2, 4]
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        tmp=tmp,
        retry={
            "schedule_seconds": schedule,
            "max_age_seconds": 15,
            "circuit_breaker": {"failures": 5, "cooldown_seconds": 1, "max_cooldown_seconds": 4},
        },
    )
    config = setup.config()
    receiver.answer("a", default=503)
    events = await _events(setup, 200)
    service = running_service(config, setup.environ)
    try:
        assert await wait_record_count(bootstrap, setup.dead_letter_topic, len(events), 120)
    finally:
        await service.shutdown()

    letters = await _letters(bootstrap, setup.dead_letter_topic)
    assert sorted(str(x.delivery_id) for x in letters) == sorted(_ids("a", events))
    requests = _requests(receiver, "a")
    quick = config.retry.quick_attempts
    limits = Counter(letter.limit for letter in letters)
    for letter in letters:
        assert requests[str(letter.delivery_id)] == letter.attempts, letter
        if letter.limit == "schedule":
            assert (letter.reason.kind, letter.reason.status) == ("http_status", 503), letter
            assert letter.rounds == len(schedule), letter
            assert letter.attempts == quick + len(schedule), letter
        else:
            assert letter.limit == "max_age", letter
            assert letter.reason.kind == "max_age", letter
            assert letter.rounds <= len(schedule), letter
            assert letter.attempts <= quick + len(schedule), letter
            # The receiver's last status, when there was a request; none while held throughout.
            assert letter.reason.status == (503 if letter.attempts else None), letter
    assert limits["max_age"], "nothing reached max_age: the test proves nothing"
    assert [x for x in letters if x.limit == "max_age" and x.attempts], (
        "no max_age letter had a real attempt: the last status was never kept"
    )
    _attempt_numbers_count_requests(receiver, "a")
    print(f"\nreceiver down for good, max_age 15 s: {dict(limits)}")


# 3. Two deployments on one broker ------------------------------------------------------------


async def _two_deployments(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    retry_topic_prefix: str | None,
    running_service: StartService,
) -> list[tuple[Setup, set[str]]]:
    """Two deployments (own group, input topic, channel) whose receivers fail their first
    requests, run at once in this process until both delivered everything."""
    runs = []
    for name in ("east", "west"):
        hook = f"{name}-hook"
        setup = Setup(
            bootstrap,
            receiver,
            [channel(receiver, hook)],
            {f"c-{name}": [hook]},
            tmp=f"{tmp}/{name}",
            kafka={} if retry_topic_prefix is None else {"retry_topic_prefix": retry_topic_prefix},
            retry={
                "quick_attempts": 1,
                "schedule_seconds": [1, 2],
                "circuit_breaker": {
                    "failures": 5,
                    "cooldown_seconds": 1,
                    "max_cooldown_seconds": 2,
                },
            },
        )
        # The first requests fail, all at once and for different deliveries: each of those
        # waits on a delay topic once, and none can use up its schedule.
        receiver.answer(hook, [503] * 10)
        events = await _events(setup, 200, campaign=f"c-{name}")
        runs.append((setup, _ids(hook, events)))
    services = [running_service(s.config(), s.environ) for s, _ in runs]
    try:
        for setup, expected in runs:
            hook = setup.channels[0]["name"]
            assert await receiver.wait_for(
                lambda r, h=hook, e=expected: _delivered_ids(r, h) >= e, within=90
            ), f"{setup.group}: {len(expected - _delivered_ids(receiver, hook))} never arrived"
    finally:
        await asyncio.gather(*(s.shutdown() for s in services))
    for setup, _ in runs:
        hook = setup.channels[0]["name"]
        assert _duplicates(receiver, hook) == 0, setup.group
        assert await record_count(bootstrap, setup.dead_letter_topic) == 0, setup.group
    return runs


async def test_two_deployments_with_default_names_keep_to_their_own_topics(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    runs = await _two_deployments(bootstrap, receiver, tmp, None, running_service)
    for setup, _ in runs:
        config = setup.config()
        assert config.kafka.dead_letter_topic == f"{setup.group}.dlq"
        assert config.kafka.retry_topic_prefix == f"{setup.group}.retry"
        records = await _delay_records(bootstrap, config.kafka.retry_topic_prefix)
        assert records, f"{setup.group} never used its delay topics: the test proves nothing"
        groups = {header(r.headers, GROUP_HEADER) for r in records}
        assert groups == {setup.group.encode()}, groups


async def test_two_deployments_sharing_a_retry_prefix_each_skip_the_others_records(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    shared = f"shared-{uuid.uuid4().hex[:10]}.retry"  # a misconfiguration, survived
    runs = await _two_deployments(bootstrap, receiver, tmp, shared, running_service)
    records = await _delay_records(bootstrap, shared)
    groups = {header(r.headers, GROUP_HEADER) for r in records}
    assert groups == {s.group.encode() for s, _ in runs}, "both must have used the shared topics"
    topics = await delay_topics_named(bootstrap, shared)
    for setup, _ in runs:
        # Skipped and committed past: the other deployment's records hold nothing back.
        assert await group_committed_to_end(bootstrap, setup.group, topics), setup.group


# 4. A schedule change across a restart -------------------------------------------------------


async def test_a_schedule_change_strands_nothing_on_a_retired_delay_topic(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        tmp=tmp,
        retry={
            "quick_attempts": 1,
            "schedule_seconds": [12],
            "circuit_breaker": {"failures": 1_000_000, "cooldown_seconds": 1},
        },
    )
    receiver.answer("a", default=503)
    events = await _events(setup, 100)
    expected = _ids("a", events)
    retired = setup.delay_topic(12)
    first = running_service(setup.config(), setup.environ)
    try:
        assert await wait_delayed_count(bootstrap, retired, len(events), 60)
    finally:
        await first.shutdown()
    assert len(receiver.received) == len(events), "a record came back before the stop"
    waiting = await committed_offsets(bootstrap, setup.group, retired)
    assert sum(max(0, o) for o in waiting.values()) == 0, "the 12 s records were consumed"

    setup.retry["schedule_seconds"] = [2, 4]
    config = setup.config()
    assert retired not in delay_topics(config), "the 12 s level must be retired"
    receiver.answer("a", default=200)
    second = running_service(config, setup.environ)
    try:
        assert await receiver.wait_for(lambda r: _delivered_ids(r, "a") >= expected, within=60), (
            f"{len(expected - _delivered_ids(receiver, 'a'))} stranded on {retired}"
        )
        assert await group_committed_to_end(bootstrap, setup.group, [retired])
    finally:
        await second.shutdown()
    assert _duplicates(receiver, "a") == 0
    assert {r.attempt for r in receiver.delivered()} == {2}
    assert await record_count(bootstrap, setup.dead_letter_topic) == 0


# 5. Parking under a rate limit ---------------------------------------------------------------


@pytest.mark.timeout(420)  # 5,000 deliveries at 20/s: some 250 s, and up to 400 s waited for
async def test_parking_under_a_rate_limit_is_paced_and_rarely_repeated(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    record_property: RecordProperty,
    running_service: StartService,
) -> None:
    rate, count = 20, 5000
    limited = channel(receiver, "a", rate_limit={"per_second": rate, "burst": rate})
    setup = Setup(bootstrap, receiver, [limited], {"c": ["a"]}, tmp=tmp)  # default retry
    config = setup.config()
    events = await _events(setup, count)
    expected = _ids("a", events)
    service = running_service(config, setup.environ)
    try:
        # 5,000 at 20/s: about 250 s.
        assert await receiver.wait_for(
            lambda r: _delivered_ids(r, "a") >= expected, within=count / rate * 1.6
        ), f"{len(expected - _delivered_ids(receiver, 'a'))} never arrived"
    finally:
        await service.shutdown()

    assert _duplicates(receiver, "a") == 0
    assert await record_count(bootstrap, setup.dead_letter_topic) == 0
    parked = await delayed_deliveries(bootstrap, config.kafka.retry_topic_prefix)
    assert all(p.parks >= 1 and p.rounds == 0 for p in parked), "a delay record was not a park"
    writes = Counter(p.delivery_id for p in parked)
    mean_writes = len(parked) / count
    max_parks = max((p.parks for p in parked), default=0)
    assert mean_writes < 1.5, f"{mean_writes:.2f} park writes per delivery"
    assert max_parks <= config.retry.max_parks

    times = sorted(r.at for r in receiver.received)
    # The limit governs when requests are sent; each body carries its send time (ms).
    sent = sorted(sent_at(r.body for r in receiver.received))
    busiest, began = busiest_window(sent)
    arrived, arrived_began = busiest_window(times)
    assert busiest <= most_in_a_second(rate, burst=rate), (
        f"{busiest} sent within one second, at +{began - sent[0]:.1f}s"
    )
    margin = 5.0  # the burst at the start and the tail at the end are not the steady rate
    # On the sender's stamps too: arrivals bunch behind stalls of this test's own loop.
    steady = [t for t in sent if sent[0] + margin <= t <= sent[-1] - margin]
    steady_rate = len(steady) / (sent[-1] - sent[0] - 2 * margin)
    assert abs(steady_rate - rate) <= 0.1 * rate, f"steady {steady_rate:.2f}/s against {rate}/s"

    figures = {
        "deliveries_arrived": len(_delivered_ids(receiver, "a")),
        "park_writes": len(parked),
        "park_writes_per_delivery_mean": round(mean_writes, 3),
        "park_writes_per_delivery_max": max(writes.values(), default=0),
        "parks_field_max": max_parks,
        "busiest_second_sent": busiest,
        "busiest_second_sent_at": round(began - sent[0], 1),
        "busiest_second_arrived": arrived,
        "busiest_second_arrived_at": round(arrived_began - times[0], 1),
        "steady_rate": round(steady_rate, 2),
        "elapsed_seconds": round(times[-1] - times[0], 1),
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"\n{count} events at {rate}/s: {figures}")


# 6. A due time a day ahead -------------------------------------------------------------------


def _delayed(setup: Setup, delivery: str, due_ms: int) -> DelayedDelivery:
    now = time.time()
    return DelayedDelivery(
        delivery_id=delivery,
        channel="a",
        campaign_id="c",
        template_param={"title": "hello c"},
        user_attr=[],
        events=[event("c", "u-late")],
        sources=[SourceRef(topic=setup.topic, partition=0, offset=0)],
        attempts=1,
        rounds=1,
        created_at=now,
        first_attempt_at=now,
        last_attempt_at=now,
        last_error=Reason(kind="http_status", status=503),
        due_ms=due_ms,
    )


async def test_a_record_due_a_day_ahead_waits_only_its_topics_level(
    bootstrap: str,
    receiver: Receiver,
    tmp: str,
    running_service: StartService,
) -> None:
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        tmp=tmp,
        retry={"schedule_seconds": [5, 60]},
    )
    config = setup.config()
    level = delay_levels(config.retry)[0]
    topic = setup.delay_topic(level)
    await _events(setup, 1)  # proves the service is up and assigned
    service = running_service(config, setup.environ)
    try:
        assert await receiver.wait_for(lambda r: len(r.delivered()) == 1, within=60)
        now_ms = int(time.time() * 1000)
        late = _delayed(setup, f"late-{setup.suffix}", now_ms + 86_400_000)
        due = [_delayed(setup, f"due-{i}-{setup.suffix}", now_ms) for i in range(20)]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            sent = time.monotonic()
            acks = [
                await producer.send(
                    topic,
                    record.model_dump_json().encode(),
                    key=record.delivery_id.encode(),
                    partition=0,  # the late one first: the head of the partition
                    headers=headers_for(record, setup.group),
                )
                for record in [late, *due]
            ]
            await asyncio.gather(*acks)
        finally:
            await producer.stop()
        due_ids = {d.delivery_id for d in due}
        assert await receiver.wait_for(lambda r: _delivered_ids(r, "a") >= due_ids, within=30)
        assert await receiver.wait_for(
            lambda r: late.delivery_id in _delivered_ids(r, "a"), within=60
        ), "the day-ahead record held on to its due time"
    finally:
        await service.shutdown()
    arrived = {r.delivery_id: r.at - sent for r in receiver.delivered()}
    slowest_due = max(arrived[d] for d in due_ids)
    assert slowest_due <= 5, f"due records behind a late head took {slowest_due:.1f}s"
    clamp = level + DUE_SLACK_MS / 1000
    assert level <= arrived[late.delivery_id] <= clamp + 5, (
        f"the day-ahead record came after {arrived[late.delivery_id]:.1f}s, clamp {clamp}s"
    )
    print(
        f"\ndue records behind a day-ahead head: within {slowest_due:.2f}s; "
        f"the day-ahead one after {arrived[late.delivery_id]:.2f}s (level {level}s)"
    )


# 7. A retry on a delay partition that rested -------------------------------------------------


@pytest.mark.timeout(120)
async def test_a_retry_on_a_resting_delay_partition_comes_back_on_time(
    bootstrap: str, receiver: Receiver, tmp: str, running_service: StartService
) -> None:
    """Levels 10, 12, 40, ...: the 12 s level rests while idle and peeks every second (a
    tenth of the level below). Its records are written long after the service went idle, so
    the partitions they land on are resting; each must still be read before it is due."""
    schedule = [10, 12]
    setup = Setup(
        bootstrap,
        receiver,
        [channel(receiver, "a")],
        {"c": ["a"]},
        tmp=tmp,
        retry={
            "schedule_seconds": schedule,
            "quick_attempts": 1,
            "circuit_breaker": {"failures": 1_000_000},  # scheduled waits, not probe waits
        },
    )
    config = setup.config()
    count = 20
    # Attempt 1 (quick) and attempt 2 (after 10 s) fail; attempt 3 waits 12 s and succeeds.
    receiver.answer("a", [503] * (2 * count), default=200)
    events = await _events(setup, count)
    expected = _ids("a", events)
    service = running_service(config, setup.environ)
    try:
        assert await receiver.wait_for(lambda r: _delivered_ids(r, "a") >= expected, within=90), (
            f"{len(expected - _delivered_ids(receiver, 'a'))} never arrived"
        )
    finally:
        await service.shutdown()

    attempts: dict[str, dict[int, float]] = {}
    for r in receiver.received:
        attempts.setdefault(r.delivery_id, {})[r.attempt] = r.at
    gaps = sorted(a[3] - a[2] for a in attempts.values())
    print(
        f"\n12 s retries from resting partitions came back after {gaps[0]:.2f} to {gaps[-1]:.2f} s"
    )
    # Never early (due times are kept to the millisecond) and not late: resting or not, the
    # record is read before it is due. 1.5 s covers a fetch cycle and the lane on a busy
    # 2-core machine; a partition that slept through its peeks would miss it by far.
    assert gaps[0] >= schedule[1] - 0.05, gaps
    assert gaps[-1] <= schedule[1] + 1.5, gaps
