"""The reference receiver: verifies signatures over the raw body, answers as scripted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from consumer.receiver import Receiver
from consumer.signing import sign

BODY = b'{"name":"crm","templateParam":{},"userAttr":[],"timestamp":"1"}'


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver({"crm": "s3cr3t-示例"})
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(session: aiohttp.ClientSession, url: str, signature: str, body: bytes = BODY) -> int:
    headers = {"X-gio-signature": signature, "X-gio-delivery-id": "d-1", "X-gio-attempt": "3"}
    async with session.post(url, data=body, headers=headers) as response:
        return response.status


async def test_correct_signature_is_verified(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    assert await post(session, receiver.url("crm"), sign(BODY, "s3cr3t-示例")) == 200
    (got,) = receiver.received
    assert got.verified
    assert (got.channel, got.delivery_id, got.attempt) == ("crm", "d-1", 3)
    assert got.body["name"] == "crm"
    assert receiver.delivered() == [got]


async def test_wrong_signature_is_refused(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    assert await post(session, receiver.url("crm"), sign(BODY, "wrong")) == 401
    assert await post(session, receiver.url("crm"), sign(BODY + b" ", "s3cr3t-示例")) == 401
    assert [r.verified for r in receiver.received] == [False, False]
    assert receiver.delivered() == []


async def test_unknown_path_verifies_with_empty_secret(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    assert await post(session, receiver.url("other"), sign(BODY, "")) == 200


async def test_scripted_answers_then_default(
    receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    receiver.answer("crm", [503, 429])
    signature = sign(BODY, "s3cr3t-示例")
    statuses = [await post(session, receiver.url("crm"), signature) for _ in range(3)]
    assert statuses == [503, 429, 200]
    assert await receiver.wait_for(lambda r: len(r.delivered()) == 1, within=1.0)
