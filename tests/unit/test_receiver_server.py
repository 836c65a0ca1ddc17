"""The receiver process: secrets from RECEIVER_* variables, one log line per request."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from consumer.receiver_server import ServedReceiver, env_key, serve_receiver
from consumer.secrets import Secret
from consumer.signing import sign
from consumer.standard_webhooks import SigningKeys
from tests.support.polling import wait_until

BODY = (
    b'{"name":"coupon-system","templateParam":{"discount":"20%"},'
    b'"userAttr":[{"hobby":"chess"},{"hobby":"go"}],"timestamp":"1"}'
)
SECRET = "coupon-key-0123"
WHSEC = "whsec_" + base64.b64encode(b"w" * 32).decode()
ENVIRON = {
    "RECEIVER_SECRET_COUPON_SYSTEM": SECRET,
    "RECEIVER_WHSEC_PUSH_SERVICE": WHSEC,
    "UNRELATED": "not read",
}


@pytest.fixture
async def served() -> AsyncIterator[ServedReceiver]:
    receiver = ServedReceiver(ENVIRON)
    await receiver.start()
    yield receiver
    await receiver.stop()


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status


def gio(body: bytes, key: str) -> dict[str, str]:
    return {"X-gio-signature": sign(body, key), "X-gio-delivery-id": "d-7", "X-gio-attempt": "2"}


@pytest.mark.parametrize(
    ("channel", "suffix"),
    [("coupon-system", "COUPON_SYSTEM"), ("crm.v2", "CRM_V2"), ("积分", "__"), ("a_b", "A_B")],
)
def test_env_key_upper_cases_and_writes_other_characters_as_underscores(
    channel: str, suffix: str
) -> None:
    assert env_key(channel) == suffix


def test_only_receiver_variables_are_read() -> None:
    receiver = ServedReceiver(ENVIRON)
    assert receiver.configured == ["RECEIVER_SECRET_COUPON_SYSTEM", "RECEIVER_WHSEC_PUSH_SERVICE"]
    assert receiver.secret_for("coupon-system") == SECRET
    assert receiver.secret_for("unknown") == ""
    assert receiver.standard_secrets_for("push-service") == [WHSEC]


async def test_a_request_signed_with_the_channel_variable_is_accepted_and_logged(
    served: ServedReceiver,
) -> None:
    with capture_logs() as logs:
        assert await post(served.url("coupon-system"), BODY, gio(BODY, SECRET)) == 200
        assert await post(served.url("coupon-system"), BODY, gio(BODY, "wrong")) == 401
    assert [(e["event"], e["status"], e["verified"]) for e in logs] == [
        ("webhook.received", 200, True),
        ("webhook.received", 401, False),
    ]
    first = logs[0]
    assert (first["channel"], first["delivery_id"], first["attempt"]) == ("coupon-system", "d-7", 2)
    assert first["template_param"] == {"discount": "20%"}
    assert first["users"] == 2
    assert "chess" not in repr(logs)  # user attributes are counted, never logged
    assert served.received == []  # a long-running receiver keeps nothing


async def test_a_standard_webhooks_secret_comes_from_its_own_variable(
    served: ServedReceiver,
) -> None:
    now = int(datetime.now(UTC).timestamp())
    good = SigningKeys(Secret(WHSEC)).headers("d-1", now, BODY)
    wrong = SigningKeys(Secret("whsec_" + base64.b64encode(b"x" * 32).decode())).headers(
        "d-1", now, BODY
    )
    with capture_logs() as logs:
        assert await post(served.url("push-service"), BODY, {**gio(BODY, ""), **good}) == 200
        assert await post(served.url("push-service"), BODY, {**gio(BODY, ""), **wrong}) == 401
    assert [e["standard_verified"] for e in logs] == [True, False]


async def test_serve_receiver_listens_until_stopped() -> None:
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(serve_receiver("127.0.0.1", 0, ENVIRON, stop))
        await wait_until(
            lambda: any(e["event"] == "receiver.listening" for e in logs), 10, "listening"
        )
        listening: dict[str, Any] = logs[0]
        url = f"http://127.0.0.1:{listening['port']}/hooks/coupon-system"
        assert await post(url, BODY, gio(BODY, SECRET)) == 200
        stop.set()
        await asyncio.wait_for(task, 10)
    assert listening["secrets"] == ["RECEIVER_SECRET_COUPON_SYSTEM", "RECEIVER_WHSEC_PUSH_SERVICE"]
    assert SECRET not in repr(logs)
    assert logs[-1]["event"] == "receiver.stopped"
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(url, BODY, gio(BODY, SECRET))
