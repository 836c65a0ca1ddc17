"""Fixtures every suite shares (see tests/README.md): where Kafka and Redis are, a launcher for
`webhook-consumer` processes that never leaves one running, the HTTP transport a test runs on,
and Hypothesis's profiles."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from redis.asyncio import Redis

from consumer import logs
from tests.integration.kafka import REPO, PrivateBroker, kafka_broker
from tests.integration.redis_server import redis_server
from tests.support.ports import free_ports
from tests.support.processes import Launch, ServiceProcess
from tests.transports import CLIENTS

PRIVATE_BROKER_HOME = REPO / ".cache" / "kafka-private"  # jars copied once, data wiped per test

# `dev` by default; `.ci/run` sets HYPOTHESIS_PROFILE=ci.
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci",
    # A per-example deadline is a timing assertion, and CI shares 2 cores with a broker.
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # A fresh clone has no example database; print how to replay a failure instead.
    database=None,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Tests reconfigure logging between cases (check-config, in-process services, capture_logs);
# a logger cached under an earlier configuration would bypass the later one.
logs.cache_loggers = False


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """The HTTP transport (`http.client`): each test that asks for it runs once per transport."""
    return str(request.param)


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """The shared broker's bootstrap address ($KAFKA_BOOTSTRAP_SERVERS, else one started)."""
    with kafka_broker() as address:
        yield address


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared Redis ($REDIS_URL, else one started): use key prefixes of the test's own."""
    with redis_server() as url:
        yield url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client of the shared Redis, to look at what the code under test wrote."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own in the shared Redis; its keys are deleted afterwards
    (never a FLUSHDB: others use db 0 at the same time)."""
    prefix = f"test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
async def private_broker() -> AsyncIterator[PrivateBroker]:
    """A broker of the test's own, which it may stop and start (the shared one never stops):
    own folder under .cache (the jars copied there once), free ports, wiped at the start,
    stopped at the end."""
    for attempt in range(3):
        # Free when picked, but other jobs on the machine pick ports too: take new ones if
        # one was taken before the broker bound it.
        broker = PrivateBroker(PRIVATE_BROKER_HOME, *free_ports(2))
        try:
            await broker.start(fresh=True)
            break
        except AssertionError as failed:
            if "Address already in use" not in str(failed) or attempt == 2:
                raise
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
async def unstarted_broker() -> AsyncIterator[PrivateBroker]:
    """A broker of the test's own that is not started yet, for what happens before Kafka is
    up: the test starts it (`await broker.start(fresh=True)`). Stopped at the end whatever
    the outcome (stopping one that never started does nothing)."""
    broker = PrivateBroker(PRIVATE_BROKER_HOME, *free_ports(2))
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
async def launch() -> AsyncIterator[Launch]:
    """`launch(args, env, log, cwd=None, output=None)`: a `webhook-consumer ARGS` process, not
    started yet (`await p.start()`); whatever still runs when the test ends is killed."""
    made: list[ServiceProcess] = []

    def make(
        args: Sequence[str],
        env: dict[str, str],
        log: Path,
        cwd: Path | None = None,
        output: Path | None = None,
    ) -> ServiceProcess:
        process = ServiceProcess(args, env, log, cwd, output)
        made.append(process)
        return process

    yield make
    for process in made:
        if process.running:
            await process.kill()
