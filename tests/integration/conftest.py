from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from consumer.receiver import Receiver

from .kafka import kafka_broker
from .redis_server import redis_server
from .secured_kafka import SecuredKafka, secured_kafka_broker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    with kafka_broker() as address:
        yield address


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """A second, private broker with SASL_SSL and mutual-TLS listeners (started once)."""
    with secured_kafka_broker(tmp_path_factory.mktemp("secured-kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver({})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def tmp(tmp_path: Path) -> str:
    return str(tmp_path)
