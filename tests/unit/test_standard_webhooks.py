"""Standard Webhooks signing and verification, against the spec's published test vector."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web

from consumer.receiver import Receiver
from consumer.secrets import Secret
from consumer.sender import Sender
from consumer.signing import sign, verify
from consumer.standard_webhooks import (
    SigningKeys,
    decode_secret,
    signature,
    verify_standard,
)
from tests.transports import open_client

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, DeliveryFactory, ServeHooks

# From the Standard Webhooks reference library's tests (libraries/python/tests/test_webhooks.py,
# test_sign_function), github.com/standard-webhooks/standard-webhooks.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()


def vector_headers(**changes: str) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
        **changes,
    }


def test_the_published_vector() -> None:
    key = decode_secret(VECTOR_SECRET)
    assert signature(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, key) == VECTOR_SIGNATURE
    assert decode_secret(VECTOR_SECRET.removeprefix("whsec_")) == key  # the prefix is optional


def test_verify_accepts_the_vector_within_the_tolerance_only() -> None:
    for drift in (-300, 0, 300):
        assert verify_standard(
            VECTOR_BODY, vector_headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP + drift
        )
    for drift in (-301, 301, 86400):
        assert not verify_standard(
            VECTOR_BODY, vector_headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP + drift
        )


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (VECTOR_BODY + b" ", vector_headers()),
        (VECTOR_BODY, vector_headers(**{"webhook-id": "msg_other"})),
        (VECTOR_BODY, vector_headers(**{"webhook-timestamp": str(VECTOR_TIMESTAMP + 1)})),
        (VECTOR_BODY, vector_headers(**{"webhook-timestamp": "1614265330.0"})),
        (VECTOR_BODY, vector_headers(**{"webhook-signature": VECTOR_SIGNATURE.lower()})),
        (VECTOR_BODY, vector_headers(**{"webhook-signature": "v2," + VECTOR_SIGNATURE[3:]})),
        (VECTOR_BODY, vector_headers(**{"webhook-signature": ""})),
        (VECTOR_BODY, {"webhook-timestamp": str(VECTOR_TIMESTAMP)}),
    ],
    ids=["body", "id", "timestamp", "float-ts", "case", "version", "empty", "missing"],
)
def test_verify_rejects_anything_changed(body: bytes, headers: dict[str, str]) -> None:
    assert not verify_standard(body, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP)


def test_verify_finds_the_matching_signature_among_several_and_ignores_header_case() -> None:
    offered = f"v1,bm9wZQ== v1a,c2lnbmVk {VECTOR_SIGNATURE}"
    headers = {k.title(): v for k, v in vector_headers(**{"webhook-signature": offered}).items()}
    assert verify_standard(VECTOR_BODY, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP)
    assert verify_standard(VECTOR_BODY, headers, [NEW, VECTOR_SECRET], now=VECTOR_TIMESTAMP)
    assert not verify_standard(VECTOR_BODY, headers, [NEW, OLD], now=VECTOR_TIMESTAMP)


def test_a_rotation_signs_with_both_secrets_until_the_old_one_expires() -> None:
    until = datetime(2030, 1, 1, tzinfo=UTC)
    keys = SigningKeys(Secret(NEW), Secret(OLD), until)
    before = int(until.timestamp()) - 1
    headers = keys.headers("d-1", before, b"{}")
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (NEW, OLD):  # receivers on either secret accept it
        assert verify_standard(b"{}", headers, secret, now=before)
    after = keys.headers("d-1", int(until.timestamp()), b"{}")
    assert len(after["webhook-signature"].split()) == 1
    assert not verify_standard(b"{}", after, OLD, now=int(until.timestamp()))


@pytest.mark.parametrize("bad", ["whsec_***", "whsec_" + "QUFB" * 4, "x" * 200])
def test_bad_secrets_are_refused_without_being_repeated(bad: str) -> None:
    with pytest.raises(ValueError, match="expected") as caught:
        decode_secret(Secret(bad))
    assert bad.removeprefix("whsec_") not in str(caught.value)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_the_sender_adds_standard_headers_beside_the_gio_signature(
    channel_cfg: ChannelFactory,
    build_catalog: CatalogFactory,
    bare_delivery: DeliveryFactory,
    serve_hooks: ServeHooks,
    client: str,
) -> None:
    seen: list[tuple[bytes, dict[str, str]]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((await request.read(), dict(request.headers)))
        return web.Response(text="ok")

    async with serve_hooks(handle) as runner:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks"
        env = {"HOOK_SECRET": "gio-key", "SW": NEW}
        _, catalog = build_catalog(
            [channel_cfg("sw", url=url, standard_webhooks={"secret_env": "SW"})], environ=env
        )
        delivery = bare_delivery(catalog.channels["sw"], id="0b4c3e7e-6f5e-5a59-9d7e-3f0a1c2b4d5e")
        transport = open_client(client)
        try:
            assert (await Sender(transport).send(delivery)).ok
        finally:
            await transport.close()
    [(body, headers)] = seen
    assert headers["webhook-id"] == headers["X-gio-delivery-id"] == delivery.id
    body_ms = int(json.loads(body)["timestamp"])
    assert int(headers["webhook-timestamp"]) == body_ms // 1000  # one moment, two units
    assert verify(body, headers["X-gio-signature"], "gio-key")
    assert verify_standard(body, headers, NEW)
    assert not verify_standard(body, headers, OLD)


async def test_the_reference_receiver_checks_a_standard_signature_when_sent(
    session: aiohttp.ClientSession,
) -> None:
    receiver = Receiver({"crm": ""}, standard_secrets={"crm": [NEW]})
    await receiver.start()
    try:
        now = int(datetime.now(UTC).timestamp())
        good = SigningKeys(Secret(NEW)).headers("d-1", now, b"{}")
        wrong = SigningKeys(Secret(OLD)).headers("d-2", now, b"{}")
        gio = {"X-gio-signature": sign(b"{}", "")}
        for headers in (good, wrong, {}):
            async with session.post(
                receiver.url("crm"), data=b"{}", headers={**gio, **headers}
            ) as response:
                await response.read()
    finally:
        await receiver.stop()
    assert [(r.status, r.standard_verified) for r in receiver.received] == [
        (200, True),
        (401, False),
        (200, None),
    ]
