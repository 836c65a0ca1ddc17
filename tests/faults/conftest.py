"""The fault suite (`make faults`): real `webhook-consumer run` processes, a real Kafka, a real
HTTP receiver; each scenario asserts bounds and reports its figures at the end of the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

# `bootstrap`, `redis_url` and `private_broker` are tests/conftest.py's; the replicas keep their
# attributes in Redis, shared, as they would in production.

_FIGURES: list[str] = []


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
