"""/healthz's loop monitor and /readyz's readiness, under times the test chooses."""

from __future__ import annotations

from consumer.health import LoopMonitor
from consumer.hooks.readiness import Readiness
from consumer.observer import AttributesProgress, Lifecycle, PartitionsOwned, Stage
from tests.support.clock import ManualClock
from tests.support.polling import wait_until


def test_a_loop_that_keeps_up_is_healthy() -> None:
    clock = ManualClock(100.0)
    monitor = LoopMonitor(interval=0.5, bound=2.0, grace=20.0, clock=clock)
    for _ in range(100):
        clock.now += 0.6
        monitor.sample(0.1, clock.now)
    verdict = monitor.verdict()
    assert verdict.ok
    assert verdict.reason == "event loop lag 100 ms"


def test_a_loop_behind_the_bound_for_the_grace_period_is_not() -> None:
    clock = ManualClock(100.0)
    monitor = LoopMonitor(interval=0.5, bound=2.0, grace=20.0, clock=clock)
    for _ in range(6):  # 3 s late each time: behind for 6 x 3.5 s
        clock.now += 3.5
        monitor.sample(3.0, clock.now)
        if clock.now - 100.0 < 20.0:
            assert monitor.verdict().ok
    verdict = monitor.verdict()
    assert not verdict.ok
    assert verdict.reason.startswith("the event loop has been more than 2 s behind for 2")
    clock.now += 0.6
    monitor.sample(0.1, clock.now)  # caught up: healthy at once
    assert monitor.verdict().ok


def test_one_long_stall_is_not_enough() -> None:
    clock = ManualClock(100.0)
    monitor = LoopMonitor(interval=0.5, bound=2.0, grace=20.0, clock=clock)
    clock.now += 15.5
    monitor.sample(15.0, clock.now)  # a 15 s stall, then fine
    assert monitor.verdict().ok
    clock.now += 0.5
    monitor.sample(0.0, clock.now)
    assert monitor.verdict(clock.now + 30).ok is False  # but a monitor that stops sampling...
    assert "has not run for 30 s" in monitor.verdict(clock.now + 30).reason


async def test_the_monitor_samples_the_running_loop() -> None:
    monitor = LoopMonitor(interval=0.01, bound=2.0, grace=20.0)
    monitor.start()
    try:
        first = monitor._last_sample
        await wait_until(lambda: monitor._last_sample != first, 5, "a second sample")
        assert monitor.verdict().ok
    finally:
        await monitor.stop()


def test_ready_only_with_config_producer_and_group_until_draining() -> None:
    readiness = Readiness()
    assert readiness.verdict().reason == (
        "waiting for the config, the Kafka producer, joining the consumer group"
    )
    readiness(Lifecycle(Stage.CONFIG_LOADED))
    readiness(Lifecycle(Stage.PRODUCER_STARTED))
    readiness(PartitionsOwned(frozenset(), assigned=False))  # a revoke is not a join
    assert readiness.verdict().reason == "waiting for joining the consumer group"
    readiness(PartitionsOwned(frozenset(), assigned=True))  # joined, even with no partition
    assert readiness.verdict().ok
    readiness(PartitionsOwned(frozenset(), assigned=False))  # a rebalance: still ready
    assert readiness.verdict().ok
    readiness(Lifecycle(Stage.DRAINING))
    verdict = readiness.verdict()
    assert not verdict.ok
    assert verdict.reason == "draining: stopping after a signal"


def test_with_an_attributes_topic_ready_only_once_it_was_read_to_its_end() -> None:
    readiness = Readiness(follows_attributes=True)
    readiness(Lifecycle(Stage.CONFIG_LOADED))
    readiness(Lifecycle(Stage.PRODUCER_STARTED))
    assert readiness.verdict().reason == (
        "waiting for the attributes topic read to its end, joining the consumer group"
    )
    readiness(AttributesProgress(records=1_000, lag=250_000, caught_up=False))
    assert readiness.verdict().reason == (
        "waiting for the attributes topic read to its end (250,000 records behind), "
        "joining the consumer group"
    )
    readiness(PartitionsOwned(frozenset({0}), assigned=True))
    assert not readiness.verdict().ok
    readiness(AttributesProgress(records=251_000, lag=0, caught_up=True))
    assert readiness.verdict().ok
    # Falling behind later is a lag to watch (a metric), not a reason to stop serving.
    readiness(AttributesProgress(records=252_000, lag=5_000, caught_up=True))
    assert readiness.verdict().ok


def test_not_ready_while_kafka_is_unreachable_at_start() -> None:
    readiness = Readiness()
    readiness(Lifecycle(Stage.CONFIG_LOADED))
    readiness(Lifecycle(Stage.WAITING_FOR_KAFKA))
    verdict = readiness.verdict()
    assert not verdict.ok
    assert verdict.reason == "waiting for Kafka: unreachable at start (see kafka.unreachable)"
    readiness(Lifecycle(Stage.PRODUCER_STARTED))  # Kafka answered: the usual reasons again
    assert readiness.verdict().reason == "waiting for joining the consumer group"
