"""`webhook-consumer receiver` as the compose stack runs it: a process the service delivers to."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumer.config import parse_config
from consumer.receiver import Receiver
from consumer.signing import sign
from tests.support.polling import until

from .support import Setup, StartService, encoded, event, produce


@dataclass
class ReceiverProcess:
    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def url(self, channel: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{channel}"

    def received(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == "webhook.received"]

    async def read_logs(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            try:
                self.lines.append(json.loads(raw))
            except json.JSONDecodeError:
                self.lines.append({"event": "unparsed", "text": raw.decode(errors="replace")})

    async def until(self, predicate: Any, within: float) -> bool:
        """Until predicate(self) holds; False at the deadline or once the process ended."""
        return await until(
            lambda: predicate(self) or self.process.returncode is not None, within
        ) and bool(predicate(self))


async def start_receiver(environ: dict[str, str]) -> tuple[ReceiverProcess, asyncio.Task[None]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consumer",
        "receiver",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        env={**os.environ, **environ},
        stderr=asyncio.subprocess.PIPE,
    )
    receiver = ReceiverProcess(process)
    reader = asyncio.create_task(receiver.read_logs())
    listening = await receiver.until(
        lambda r: any(line.get("event") == "receiver.listening" for line in r.lines), within=30
    )
    assert listening, receiver.lines
    receiver.port = next(ln for ln in receiver.lines if ln["event"] == "receiver.listening")["port"]
    return receiver, reader


@pytest.fixture
def keys() -> dict[str, str]:
    return {"coupon-system": "coupon-key-81f3", "push-service": "push-key-19ac"}


@pytest.fixture
async def receiver_process(keys: dict[str, str]) -> AsyncIterator[ReceiverProcess]:
    environ = {  # spelled out as an operator writes them
        "RECEIVER_SECRET_COUPON_SYSTEM": keys["coupon-system"],
        "RECEIVER_SECRET_PUSH_SERVICE": keys["push-service"],
    }
    receiver, reader = await start_receiver(environ)
    yield receiver
    if receiver.process.returncode is None:
        receiver.process.kill()
        await receiver.process.wait()
    await reader


async def test_the_receiver_process_verifies_logs_and_stops_on_sigterm(
    receiver_process: ReceiverProcess, keys: dict[str, str]
) -> None:
    body = b'{"name":"coupon-system","templateParam":{},"userAttr":[],"timestamp":"1"}'
    async with aiohttp.ClientSession() as session:
        for key, expected in ((keys["coupon-system"], 200), ("wrong", 401)):
            headers = {"X-gio-signature": sign(body, key), "X-gio-delivery-id": "d-1"}
            async with session.post(
                receiver_process.url("coupon-system"), data=body, headers=headers
            ) as response:
                assert response.status == expected
    assert await receiver_process.until(lambda r: len(r.received()) == 2, within=10)
    assert [(r["status"], r["verified"]) for r in receiver_process.received()] == [
        (200, True),
        (401, False),
    ]
    receiver_process.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(receiver_process.process.wait(), 20) == 0
    assert receiver_process.lines[-1]["event"] == "receiver.stopped"
    assert not [k for k in keys.values() if k in repr(receiver_process.lines)]


async def test_the_service_delivers_to_the_receiver_process(
    bootstrap: str,
    receiver_process: ReceiverProcess,
    keys: dict[str, str],
    tmp_path: Path,
    running_service: StartService,
) -> None:
    names = list(keys)
    setup = Setup(
        bootstrap,
        Receiver({}),  # unused: the receiver here is the process
        [
            {
                "name": name,
                "url": receiver_process.url(name),
                "secret_env": f"SECRET_{name.upper().replace('-', '_')}",
                "template_params": {"title": "string"},
                "user_attributes": ["hobby"],
            }
            for name in names
        ],
        {"double11-coupon": names},
        tmp=str(tmp_path),
    )
    environ = {f"SECRET_{name.upper().replace('-', '_')}": key for name, key in keys.items()}
    service = running_service(parse_config(setup.document(), "test-config", environ), environ)
    try:
        await produce(
            bootstrap, setup.topic, encoded(event("double11-coupon", f"u-{i}") for i in range(5))
        )
        assert await receiver_process.until(lambda r: len(r.received()) >= 10, within=60), (
            receiver_process.lines
        )
    finally:
        await service.shutdown()
    got = receiver_process.received()
    assert all(r["status"] == 200 and r["verified"] for r in got)
    assert {r["channel"] for r in got} == set(names)
    assert len({r["delivery_id"] for r in got}) == len(got) == 10  # each pair exactly once
