"""Secrets stay out of messages: redaction of known values, echoing receivers, log events."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import structlog
from aiohttp import web

from consumer.outcome import Kind
from consumer.secrets import REDACTED, Secret, redact, redact_event, remember
from consumer.standard_webhooks import SigningKeys

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, SendOnce, ServeHooks

GIO_SECRET = "gio-hygiene-secret-71"
PASSWORD = "hygiene-pa55word-72"
WHSEC = "whsec_" + base64.b64encode(b"hygiene-standard-key-73-xxxxxxx").decode()
ENV = {"HOOK_SECRET": GIO_SECRET, "HOOK_PASSWORD": PASSWORD, "SW": WHSEC}


def test_known_secrets_are_redacted_longest_first() -> None:
    Secret("outer-secret-inner-part")
    Secret("inner-part")
    text = "a outer-secret-inner-part b inner-part c"
    assert redact(text) == f"a {REDACTED} b {REDACTED} c"


def test_values_too_short_to_be_secrets_are_left_alone() -> None:
    Secret("abc")
    assert redact("abc abcd") == "abc abcd"


def test_derived_values_can_be_remembered() -> None:
    remember("derived-token-74")
    assert "derived-token-74" not in redact("Authorization: Basic derived-token-74")


def test_the_log_processor_scrubs_nested_fields() -> None:
    Secret("log-secret-75")
    event = {"event": "x", "error": "boom log-secret-75", "nested": {"a": ["log-secret-75"]}}
    scrubbed = redact_event(None, "info", event)
    assert "log-secret-75" not in json.dumps(scrubbed)
    assert scrubbed["event"] == "x"


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    structlog.configure(
        processors=[redact_event, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    yield out
    structlog.reset_defaults()


def test_a_secret_logged_by_mistake_never_reaches_the_output(captured_log: io.StringIO) -> None:
    Secret("mistake-secret-76-示例")
    structlog.get_logger().warning("oops", detail="value mistake-secret-76-示例 here")
    line = captured_log.getvalue()
    assert "oops" in line
    # JSON escapes non-ASCII, so scrubbing must happen before rendering to work at all.
    assert "mistake-secret-76" not in line


def test_standard_webhooks_keys_do_not_show_themselves() -> None:
    keys = SigningKeys(Secret(WHSEC), Secret(WHSEC))
    assert WHSEC.removeprefix("whsec_") not in repr(keys)


async def test_a_receiver_echoing_our_headers_leaks_nothing_into_the_outcome(
    channel_cfg: ChannelFactory,
    build_catalog: CatalogFactory,
    serve_hooks: ServeHooks,
    send_once: SendOnce,
) -> None:
    async def echo(request: web.Request) -> web.Response:
        body = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        return web.Response(status=400, text=f"rejected; you sent {GIO_SECRET}?\n{body}")

    async with serve_hooks(echo) as runner:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks"
        auth = {"username": "gio", "password_env": "HOOK_PASSWORD"}
        _, catalog = build_catalog(
            [channel_cfg("echo", url=url, basic_auth=auth, standard_webhooks={"secret_env": "SW"})],
            environ=ENV,
        )
        outcome = await send_once(catalog.channels["echo"])
    assert (outcome.kind, outcome.status) == (Kind.HTTP_STATUS, 400)
    token = base64.b64encode(f"gio:{PASSWORD}".encode()).decode()
    assert "Authorization" in outcome.message  # the echo did come back...
    for secret in (GIO_SECRET, PASSWORD, token, WHSEC, WHSEC.removeprefix("whsec_")):
        assert secret not in outcome.message  # ...without what it carried
    assert REDACTED in outcome.message


def test_a_channel_shows_none_of_its_secrets(
    channel_cfg: ChannelFactory, build_catalog: CatalogFactory
) -> None:
    auth = {"username": "gio", "password_env": "HOOK_PASSWORD"}
    _, catalog = build_catalog(
        [channel_cfg("all", basic_auth=auth, standard_webhooks={"secret_env": "SW"})],
        environ=ENV,
    )
    channel = catalog.channels["all"]
    assert channel.redactions  # it does hold them, for scrubbing
    shown = f"{channel!r} {catalog!r}"
    token = base64.b64encode(f"gio:{PASSWORD}".encode()).decode()
    for secret in (GIO_SECRET, PASSWORD, token, WHSEC.removeprefix("whsec_")):
        assert secret not in shown
