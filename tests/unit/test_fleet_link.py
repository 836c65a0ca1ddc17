"""The fleet's Redis link over a scripted client: errors sorted by who can fix them, a probe
that always comes back and trusts only a real script, no flapping, and one channel's bad keys
kept to that channel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    MovedError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeout
from structlog.testing import capture_logs

from consumer.fleet import link as link_module
from consumer.fleet.channel_link import ChannelLink
from consumer.fleet.link import RedisLink, Script
from consumer.fleet.shared import FleetUnavailable
from consumer.fleet.trouble import Trouble, diagnose
from consumer.redis_health import RedisHealth

from .conftest import WaitUntil

SCRIPT = Script.of("grant", "return 1")


@pytest.mark.parametrize(
    ("error", "trouble"),
    [
        (ConnectionError("Connection refused"), Trouble.UNREACHABLE),
        (ConnectionError("No connection available."), Trouble.UNREACHABLE),
        (RedisTimeout("Timeout reading from socket"), Trouble.UNREACHABLE),
        (TimeoutError(), Trouble.UNREACHABLE),
        (OSError("Network is unreachable"), Trouble.UNREACHABLE),
        (BusyLoadingError("Redis is loading the dataset in memory"), Trouble.UNREACHABLE),
        (ResponseError("BUSY Redis is busy running a script"), Trouble.UNREACHABLE),
        (MovedError("3999 127.0.0.1:6381"), Trouble.MISCONFIGURED),
        (ReadOnlyError("You can't write against a read only replica."), Trouble.MISCONFIGURED),
        (NoPermissionError("this user has no permissions"), Trouble.MISCONFIGURED),
        (AuthenticationError("Authentication required."), Trouble.MISCONFIGURED),
        (
            OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
            Trouble.MISCONFIGURED,
        ),
        (ResponseError("unknown command 'EVALSHA'"), Trouble.MISCONFIGURED),
        (
            ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
            Trouble.KEY,
        ),
        (ResponseError("ERR user_script:9: attempt to compare nil with number"), Trouble.KEY),
    ],
)
def test_errors_are_sorted_by_who_can_fix_them(error: BaseException, trouble: Trouble) -> None:
    diagnosis = diagnose(error)
    assert diagnosis.trouble is trouble
    assert bool(diagnosis.fix) == (trouble is not Trouble.UNREACHABLE)


class Pool:
    def __init__(self) -> None:
        self.max_connections = 1
        self.disconnects = 0
        self.hang_disconnects = 0  # this many disconnects never return

    async def disconnect(self) -> None:
        self.disconnects += 1
        if self.hang_disconnects:
            self.hang_disconnects -= 1
            await asyncio.Event().wait()  # a close to a black-holed TLS peer


class Client:
    """What the link uses of a redis.asyncio.Redis, answering as `answer` says."""

    def __init__(self) -> None:
        self.connection_pool = Pool()
        self.answer: Callable[[str, tuple[Any, ...]], Any] = lambda _sha, _args: 1
        self.scripts: set[str] = set()
        self.calls: list[str] = []

    async def evalsha(self, sha: str, numkeys: int, *args: Any) -> Any:
        self.calls.append(sha)
        if sha not in self.scripts:
            raise NoScriptError("No matching script.")
        return self.answer(sha, args)

    async def script_load(self, source: str) -> str:
        sha = Script.of("", source).sha
        self.scripts.add(sha)
        return sha

    async def ping(self) -> bool:  # answers even when the scripts are refused
        return True

    async def aclose(self) -> None:
        return None


def link_over(client: Client, health: RedisHealth | None = None) -> RedisLink:
    return RedisLink(
        client,  # type: ignore[arg-type]
        timeout_seconds=0.2,
        replicas=lambda: 3,
        shown_url="redis://limits:6379/0",
        health=health,
    )


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes within milliseconds, so a test sees several."""
    monkeypatch.setattr(link_module, "PROBE_FIRST", 0.01)
    monkeypatch.setattr(link_module, "PROBE_MAX", 0.02)
    monkeypatch.setattr(link_module, "MISCONFIGURED_FIRST", 0.05)
    monkeypatch.setattr(link_module, "MISCONFIGURED_MAX", 0.1)


def refuse(error: BaseException) -> Callable[[str, tuple[Any, ...]], Any]:
    def answer(_sha: str, _args: tuple[Any, ...]) -> Any:
        raise error

    return answer


def works(_sha: str, _args: tuple[Any, ...]) -> Any:
    return 1


@pytest.mark.usefixtures("quick")
async def test_a_close_that_hangs_never_ends_the_probe(wait_until: WaitUntil) -> None:
    client = Client()
    link = link_over(client)
    client.answer = refuse(ConnectionError("reset by peer"))
    with pytest.raises(FleetUnavailable):
        await link.run(SCRIPT, ("k",), ())
    assert not link.shared
    client.connection_pool.hang_disconnects = 2  # the first probes' closes time out
    client.answer = works
    await wait_until(lambda: link.shared, within=5, what="back after closes that hung")
    assert client.connection_pool.disconnects >= 3
    await link.close()


@pytest.mark.usefixtures("quick")
async def test_recovery_is_a_script_that_runs_not_a_ping(wait_until: WaitUntil) -> None:
    """A primary that failed over is now a read-only replica: it answers PING, refuses the
    scripts. The link stays on the fallback until a script runs again."""
    client = Client()
    link = link_over(client)
    client.answer = refuse(ConnectionError("reset by peer"))
    with pytest.raises(FleetUnavailable):
        await link.run(SCRIPT, ("k",), ())
    client.answer = refuse(ReadOnlyError("You can't write against a read only replica."))
    probes = len(client.calls)
    await wait_until(lambda: len(client.calls) >= probes + 2, what="two probes refused")
    assert not link.shared
    client.answer = works
    await wait_until(lambda: link.shared, within=5, what="back once the scripts run")
    await link.close()


@pytest.mark.usefixtures("quick")
async def test_a_misconfigured_redis_is_said_once_with_the_fix_and_never_flaps(
    wait_until: WaitUntil,
) -> None:
    client = Client()
    health = RedisHealth()
    link = link_over(client, health)
    client.answer = refuse(NoPermissionError("this user has no permissions to run 'evalsha'"))
    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(FleetUnavailable):
                await link.run(SCRIPT, ("k",), ())
        probes = len(client.calls)
        await wait_until(lambda: len(client.calls) >= probes + 3, what="probes refused")
    assert not link.shared
    assert health.available is False
    loud = [line for line in logs if line["log_level"] == "error"]
    assert [line["event"] for line in loud] == ["rate_limiter.fallback"]
    assert "ACL" in loud[0]["fix"]
    assert not [line for line in logs if line["event"] == "rate_limiter.recovered"]
    await link.close()


@pytest.mark.usefixtures("quick")
async def test_falling_back_again_soon_after_a_recovery_probes_more_slowly(
    wait_until: WaitUntil,
) -> None:
    """A Redis that comes and goes (a pool running dry, a flaky network): each fall back
    soon after a recovery waits 4x longer before the next probe, and says so quietly."""
    client = Client()
    link = link_over(client)
    waits: list[float] = []
    with capture_logs() as logs:
        for _ in range(3):
            client.answer = refuse(ConnectionError("reset by peer"))
            with pytest.raises(FleetUnavailable):
                await link.run(SCRIPT, ("k",), ())
            waits.append(link._delays()[0])
            client.answer = works
            await wait_until(lambda: link.shared, within=5, what="back")
    assert waits == [0.01, 0.04, 0.16]
    warnings = [line["event"] for line in logs if line["log_level"] == "warning"]
    assert warnings == ["rate_limiter.fallback", "rate_limiter.recovered"]  # then quiet
    await link.close()


@pytest.mark.usefixtures("quick")
async def test_a_probe_that_dies_is_started_again(
    monkeypatch: pytest.MonkeyPatch, wait_until: WaitUntil
) -> None:
    class Unexpected(BaseException):
        pass

    client = Client()
    link = link_over(client)
    real = link._script
    failures = [Unexpected()]

    async def script(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args)

    client.answer = refuse(ConnectionError("reset by peer"))
    with pytest.raises(FleetUnavailable):
        await link.run(SCRIPT, ("k",), ())
    monkeypatch.setattr(link, "_script", script)
    client.answer = works
    await wait_until(lambda: link.shared, within=5, what="back after the probe died")
    assert not failures
    await link.close()


async def test_one_channels_bad_keys_keep_only_that_channel_on_the_fallback() -> None:
    client = Client()
    link = link_over(client)
    broken, healthy = ChannelLink(link, "broken"), ChannelLink(link, "healthy")

    def answer(_sha: str, args: tuple[Any, ...]) -> Any:
        if args[0] == "broken-key":
            raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
        return 1

    client.answer = answer
    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(FleetUnavailable):
                await broken.run(SCRIPT, ("broken-key",), ())
            assert await healthy.run(SCRIPT, ("healthy-key",), ()) == 1
    assert link.shared
    assert healthy.shared
    assert not broken.shared
    calls = [sha for sha in client.calls if sha == SCRIPT.sha]
    assert len(calls) == 1 + 1 + 3  # broken: once, then refused locally; healthy: each time
    [line] = [entry for entry in logs if entry["event"] == "rate_limiter.channel_fallback"]
    assert (line["channel"], line["log_level"]) == ("broken", "error")
    assert "key_prefix" in line["fix"]
    await link.close()


async def test_the_pools_grow_with_the_channels() -> None:
    client, blocking = Client(), Client()
    link = RedisLink(
        client,  # type: ignore[arg-type]
        timeout_seconds=0.2,
        replicas=lambda: 1,
        shown_url="redis://limits:6379/0",
        blocking=blocking,  # type: ignore[arg-type]
    )
    link.provision(3)
    small = client.connection_pool.max_connections
    link.provision(40)
    assert client.connection_pool.max_connections > small
    assert blocking.connection_pool.max_connections >= 40  # one blocking wait per channel
    await link.close()
