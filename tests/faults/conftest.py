"""The fault suite (`make faults`): real `webhook-consumer run` processes, a real Kafka, a real
HTTP receiver; each scenario asserts bounds and reports its figures at the end of the run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.integration.kafka import REPO, PrivateBroker, free_port, kafka_broker
from tests.integration.redis_server import redis_server

_FIGURES: list[str] = []


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    with kafka_broker() as address:
        yield address


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Attributes live in Redis, shared by the replicas, as they would in production."""
    with redis_server() as url:
        yield url


@pytest.fixture
async def private_broker() -> AsyncIterator[PrivateBroker]:
    """A broker this suite may stop and start; wiped at the start, stopped at the end."""
    broker = PrivateBroker(REPO / ".cache" / "kafka-faults", free_port(), free_port())
    await broker.start(fresh=True)
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Prints a figure now and again in the summary at the end of the run."""

    def add(line: str) -> None:
        text = f"{request.node.name}: {line}"
        print(text)
        _FIGURES.append(text)

    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("fault figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
