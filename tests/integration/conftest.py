from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from consumer.config import ServiceConfig
from consumer.receiver import Receiver

from .secured_kafka import SecuredKafka, secured_kafka_broker
from .support import RunningService, StartService


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """A second, private broker with SASL_SSL and mutual-TLS listeners (started once)."""
    with secured_kafka_broker(tmp_path_factory.mktemp("secured-kafka")) as broker:
        yield broker


@pytest.fixture
async def running_service() -> AsyncIterator[StartService]:
    """`running_service(config, environ)`: the service in this process, running until the test
    calls `shutdown()`; stopped at the end of the test whatever its outcome, so a failed
    assertion never leaves a consumer in the group of the next test."""
    started: list[RunningService] = []

    def start(config: ServiceConfig, environ: dict[str, str]) -> RunningService:
        service = RunningService(config, environ)
        started.append(service)
        return service

    yield start
    for service in started:
        await service.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver({})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client for the admin port (`admin_port.get`, `poll_status`), with a 10 s limit."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def tmp(tmp_path: Path) -> str:
    return str(tmp_path)
