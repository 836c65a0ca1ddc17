"""One HTTP attempt: encode, sign, POST, classify. Nothing here retries or touches Kafka."""

from __future__ import annotations

import time
from typing import Final

import aiohttp

from . import __version__
from .delivery import Delivery
from .outcome import Kind, Outcome, from_response
from .payload import encode_body
from .signing import sign

USER_AGENT: Final = f"webhook-consumer/{__version__}"
EXCERPT_BYTES: Final = 2048  # kept for logs and dead letters; the rest of a body is never read


def make_session(max_connections: int = 1000) -> aiohttp.ClientSession:
    """One session for the process: connections are pooled per host across all deliveries."""
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=0, ttl_dns_cache=60, enable_cleanup_closed=True
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        max_line_size=8190,
        max_field_size=8190,
    )


class Sender:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(self, delivery: Delivery) -> Outcome:
        body, headers = self.prepare(delivery)
        return await self.post(delivery, body, headers)

    def prepare(self, delivery: Delivery) -> tuple[bytes, dict[str, str]]:
        """The exact body of this attempt (fresh timestamp) and its headers, signed."""
        channel = delivery.channel
        body = encode_body(channel.name, delivery.template_param, delivery.user_attr)
        headers = {
            "Content-Type": "application/json",
            "X-gio-signature": sign(body, channel.secret),
            "X-gio-delivery-id": delivery.id,
            "X-gio-attempt": str(delivery.attempts),
            "User-Agent": USER_AGENT,
        }
        if channel.authorization is not None:
            headers["Authorization"] = channel.authorization.reveal()
        return body, headers

    async def post(self, delivery: Delivery, body: bytes, headers: dict[str, str]) -> Outcome:
        channel = delivery.channel
        timeout = aiohttp.ClientTimeout(total=channel.timeout_seconds)
        started = time.monotonic()
        try:
            async with self._session.post(
                channel.url, data=body, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                excerpt = await response.content.read(EXCERPT_BYTES)
                return from_response(
                    response.status,
                    response.headers.get("Retry-After"),
                    excerpt.decode("utf-8", "replace"),
                )
        except TimeoutError:
            elapsed = time.monotonic() - started
            return Outcome(Kind.TIMEOUT, retryable=True, message=f"no answer in {elapsed:.1f}s")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(Kind.CONNECTION, retryable=True, message=_describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
