"""One HTTP attempt: encode, sign, POST, classify. Nothing here retries or touches Kafka."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final

import aiohttp
from aiohappyeyeballs import SocketFactoryType
from aiohttp.abc import AbstractResolver

from .delivery import Delivery
from .guard import BlockedDestination, DestinationPolicy, GuardedConnector, Network
from .outcome import Kind, Outcome, from_response
from .payload import encode_body
from .secrets import redact
from .signing import sign
from .tracecontext import TRACEPARENT, TRACESTATE, new_span_id
from .version import __version__

USER_AGENT: Final = f"webhook-consumer/{__version__}"
EXCERPT_BYTES: Final = 2048  # kept for logs and dead letters; the rest of a body is never read
MAX_HEADER_BYTES: Final = 8190  # per response line and per header field; more is an error


def make_session(
    allowed_networks: Iterable[Network],
    *,
    max_connections: int = 1000,
    resolver: AbstractResolver | None = None,
    socket_factory: SocketFactoryType | None = None,
) -> aiohttp.ClientSession:
    """One session for the process: connections are pooled per host across all deliveries.

    Every connection it makes passes the destination guard: public addresses, and those in
    `allowed_networks`. `resolver` and `socket_factory` let tests stand in for DNS and sockets.
    """
    connector = GuardedConnector(
        DestinationPolicy.of(allowed_networks),
        resolver,
        limit=max_connections,
        limit_per_host=0,
        ttl_dns_cache=60,
        enable_cleanup_closed=True,
        socket_factory=socket_factory,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # a small compressed body must not inflate into a large one
        max_line_size=MAX_HEADER_BYTES,
        max_field_size=MAX_HEADER_BYTES,
        max_headers=128,
        trust_env=False,  # an HTTP(S)_PROXY from the environment would bypass the guard
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
        now_ms = time.time_ns() // 1_000_000
        body = encode_body(channel.name, delivery.template_param, delivery.user_attr, now_ms)
        headers = {
            "Content-Type": "application/json",
            "X-gio-signature": sign(body, channel.secret),
            "X-gio-delivery-id": delivery.id,
            "X-gio-attempt": str(delivery.attempts),
            "User-Agent": USER_AGENT,
        }
        if channel.standard_webhooks is not None:
            # The same moment as the body's timestamp, in the spec's whole seconds.
            headers.update(channel.standard_webhooks.headers(delivery.id, now_ms // 1000, body))
        if channel.authorization is not None:
            headers["Authorization"] = channel.authorization.reveal()
        trace = delivery.trace
        if trace is not None:  # the record's trace goes on, under a span of this request
            delivery.span_id = new_span_id()
            headers[TRACEPARENT] = trace.child(delivery.span_id)
            if trace.state is not None:
                headers[TRACESTATE] = trace.state
        return body, headers

    async def post(self, delivery: Delivery, body: bytes, headers: dict[str, str]) -> Outcome:
        channel = delivery.channel
        # `total` bounds the whole attempt, however slowly a receiver drips its answer.
        timeout = aiohttp.ClientTimeout(total=channel.timeout_seconds)
        started = time.monotonic()
        try:
            async with self._session.post(
                channel.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
                ssl=channel.tls if channel.tls is not None else True,
            ) as response:
                # At most this much is read; leaving the block closes a connection whose body
                # was not read to its end, so a huge answer costs us nothing more.
                excerpt = await response.content.read(EXCERPT_BYTES)
                return from_response(
                    response.status,
                    response.headers.get("Retry-After"),
                    redact(excerpt.decode("utf-8", "replace"), channel.redactions),
                )
        except BlockedDestination as exc:
            return Outcome(Kind.BLOCKED_DESTINATION, retryable=False, message=str(exc))
        except TimeoutError:
            elapsed = time.monotonic() - started
            return Outcome(Kind.TIMEOUT, retryable=True, message=f"no answer in {elapsed:.1f}s")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(Kind.CONNECTION, retryable=True, message=_describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}")[:500]
