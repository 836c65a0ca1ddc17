"""Repeated aiokafka errors fold into state changes; evidence of health ends an outage."""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass, field
from pathlib import Path

import aiokafka
import pytest

from consumer.kafka_health import EVIDENCE, FOLDED, KafkaHealth, KafkaHealthChange
from tests.support.clock import ManualClock

CONNECT = "Unable connect to node with id %s: %s"
COORDINATOR = "Group Coordinator Request failed: %s"


@dataclass
class World:
    clock: ManualClock = field(default_factory=ManualClock)
    changes: list[KafkaHealthChange] = field(default_factory=list)
    health: KafkaHealth = field(init=False)

    def __post_init__(self) -> None:
        self.health = KafkaHealth(
            self.changes.append, unreachable_after=5, report_every=60, clock=self.clock
        )

    def record(
        self, msg: str, *args: object, name: str = "aiokafka", level: int = logging.ERROR
    ) -> logging.LogRecord:
        record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
        assert self.health.filter(record)  # never dropped here: the level floor decides
        return record

    def errors_for(self, seconds: float, every: float = 0.01, msg: str = CONNECT) -> None:
        """aiokafka's retry loop: an error every `every` seconds for `seconds`."""
        start = self.clock.now
        for i in range(round(seconds / every)):
            self.clock.now = start + i * every
            self.record(msg, 1, "[Errno 111] Connect call failed ('127.0.0.1', 9092)")
        self.clock.now = start + seconds

    @property
    def events(self) -> list[str]:
        return [c.event for c in self.changes]


def test_a_folded_line_goes_on_at_debug_and_others_are_untouched() -> None:
    world = World()
    folded = world.record(CONNECT, 1, "refused")
    assert (folded.levelno, folded.levelname) == (logging.DEBUG, "DEBUG")
    unknown = world.record("Unexpected error in fetcher routine")
    ours = world.record(CONNECT, 1, "refused", name="consumer.listener")
    assert unknown.levelno == ours.levelno == logging.ERROR


def test_an_outage_is_one_unreachable_and_one_recovered() -> None:
    world = World()
    world.errors_for(20)  # 2000 lines, as during a 20 s broker restart
    assert world.events == ["kafka.unreachable"]
    unreachable = world.changes[0]
    assert unreachable.first_error == (
        "Unable connect to node with id 1: [Errno 111] Connect call failed ('127.0.0.1', 9092)"
    )
    assert unreachable.seconds == pytest.approx(5, abs=0.02)
    assert not world.health.reachable

    world.health.ok()
    assert world.events == ["kafka.unreachable", "kafka.recovered"]
    recovered = world.changes[1]
    assert recovered.suppressed == 2000
    assert recovered.seconds == pytest.approx(20, abs=0.02)
    assert world.health.reachable


def test_startup_noise_that_stops_prints_nothing() -> None:
    world = World()
    world.errors_for(1.5, every=0.1, msg=COORDINATOR)  # coordinator not available yet
    world.record("Discovered coordinator %s for group %s", 1, "g", level=logging.INFO)
    world.clock.now += 600
    world.errors_for(1, every=0.1)  # a blip much later is a new episode, not an outage
    assert world.changes == []
    assert world.health.reachable


def test_an_outage_begins_at_its_own_first_error_not_at_earlier_noise() -> None:
    world = World()
    world.errors_for(1, every=0.1, msg=COORDINATOR)  # start-up noise...
    world.health.ok()  # ...ended by a first fetch
    world.clock.now += 1
    world.errors_for(10)  # then the broker stops
    (unreachable,) = world.changes
    assert unreachable.first_error.startswith("Unable connect to node with id 1")
    assert unreachable.seconds == pytest.approx(5, abs=0.02)
    assert unreachable.suppressed == 501


def test_a_lone_error_long_after_another_is_no_outage() -> None:
    world = World()
    world.record(CONNECT, 1, "refused")
    world.clock.now += 600  # no evidence either: the service was idle
    world.record(CONNECT, 1, "refused")
    assert world.changes == []


def test_evidence_within_the_window_keeps_it_reachable_and_persistence_is_summarised() -> None:
    """One broker of several down: errors go on while fetches succeed. Not an outage, but
    not hidden either: one summary a minute."""
    world = World()
    for _ in range(130):
        world.errors_for(1, every=0.1)
        world.health.ok()
    assert world.events == ["kafka.errors", "kafka.errors"]
    assert world.changes[0].suppressed == 601  # a line every 0.1 s from 0 s to 60 s
    assert world.health.reachable


def test_a_long_outage_is_reminded_every_report_interval() -> None:
    world = World()
    world.errors_for(130, every=0.1)
    assert world.events == [
        "kafka.unreachable",
        "kafka.still_unreachable",
        "kafka.still_unreachable",
    ]
    assert world.changes[1].seconds == pytest.approx(65, abs=0.2)


def test_aiokafkas_discovered_coordinator_line_is_evidence_of_recovery() -> None:
    world = World()
    world.errors_for(10)
    world.record("Discovered coordinator %s for group %s", 1, "g", level=logging.INFO)
    assert world.events == ["kafka.unreachable", "kafka.recovered"]


def test_ok_while_healthy_reports_nothing() -> None:
    world = World()
    world.health.ok()
    world.health.ok()
    assert world.changes == []


def test_every_folded_template_is_still_one_aiokafka_writes() -> None:
    """An aiokafka upgrade that rewords a line would silently stop folding it."""
    logged: set[str] = set()
    for path in Path(aiokafka.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"info", "warning", "error", "exception"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                logged.add(node.args[0].value)
    assert (FOLDED | EVIDENCE) - logged == set()
