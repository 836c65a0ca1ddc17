"""`webhook-consumer receiver`: the reference receiver as a long-running process.

It verifies every request like the test receiver does, and logs each one instead of keeping it,
so it can run for days (the compose stack's demo endpoint). Secrets come from the environment,
one variable per channel, named after the last path segment upper-cased with every character
other than a letter or digit written as `_`:

    /hooks/coupon-system  RECEIVER_SECRET_COUPON_SYSTEM  the X-gio-signature key
                          RECEIVER_WHSEC_COUPON_SYSTEM   Standard Webhooks secrets, space-separated

A channel without a variable verifies with the empty key, as a channel without a secret signs.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Mapping

import structlog

from .receiver import Received, Receiver
from .secrets import remember

SECRET_PREFIX = "RECEIVER_SECRET_"
STANDARD_PREFIX = "RECEIVER_WHSEC_"

log = structlog.get_logger(__name__)


def env_key(channel: str) -> str:
    """The variable suffix of a channel: `coupon-system` -> `COUPON_SYSTEM`."""
    return re.sub(r"[^A-Z0-9]", "_", channel.upper())


class ServedReceiver(Receiver):
    """A Receiver whose secrets come from environment variables and whose requests are logged."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__({})
        self._environ = {
            name: value
            for name, value in environ.items()
            if name.startswith((SECRET_PREFIX, STANDARD_PREFIX))
        }
        for value in self._environ.values():
            for secret in value.split():
                remember(secret)  # never printed, whatever a request echoes

    @property
    def configured(self) -> list[str]:
        """The variables holding secrets (names only), to show at start."""
        return sorted(self._environ)

    def secret_for(self, channel: str) -> str:
        return self._environ.get(SECRET_PREFIX + env_key(channel), "")

    def standard_secrets_for(self, channel: str) -> list[str]:
        return self._environ.get(STANDARD_PREFIX + env_key(channel), "").split()

    def record(self, received: Received) -> None:
        users = received.body.get("userAttr")  # logged as a count: attributes are personal
        log.info(
            "webhook.received",
            channel=received.channel,
            delivery_id=received.delivery_id,
            attempt=received.attempt,
            status=received.status,
            verified=received.verified,
            standard_verified=received.standard_verified,
            name=received.body.get("name"),
            template_param=received.body.get("templateParam"),
            users=len(users) if isinstance(users, list) else None,
        )


async def serve_receiver(
    host: str, port: int, environ: Mapping[str, str], stop: asyncio.Event | None = None
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT), then close the listener and return."""
    stop = stop or asyncio.Event()
    receiver = ServedReceiver(environ)
    await receiver.start(host, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread: `stop` only
            break
    log.info(
        "receiver.listening",
        host=host,
        port=receiver.port,
        path="/hooks/{channel}",
        secrets=receiver.configured,
    )
    try:
        await stop.wait()
    finally:
        await receiver.stop()
    log.info("receiver.stopped")
