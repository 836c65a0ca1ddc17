"""One HTTP attempt: encode, sign, POST through the transport, classify. Nothing here retries or
touches Kafka; the transport (`consumer/transport/`) only moves the bytes."""

from __future__ import annotations

import time
from typing import Final

from .delivery import Delivery
from .guard import BlockedDestination
from .outcome import Kind, Outcome, from_response
from .payload import encode_body
from .secrets import redact
from .signing import sign
from .tracecontext import TRACEPARENT, TRACESTATE, new_span_id
from .transport import Transport, TransportError, describe
from .version import __version__

USER_AGENT: Final = f"webhook-consumer/{__version__}"


class Sender:
    def __init__(self, transport: Transport) -> None:
        self._transport = transport

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
        started = time.monotonic()
        try:
            answer = await self._transport.post(
                channel.url, headers, body, channel.timeout_seconds, channel.tls
            )
        except BlockedDestination as exc:
            return Outcome(Kind.BLOCKED_DESTINATION, retryable=False, message=str(exc))
        except TimeoutError:
            elapsed = time.monotonic() - started
            return Outcome(Kind.TIMEOUT, retryable=True, message=f"no answer in {elapsed:.1f}s")
        except TransportError as exc:
            return Outcome(Kind.CONNECTION, retryable=True, message=redact(str(exc))[:500])
        except OSError as exc:
            return Outcome(Kind.CONNECTION, retryable=True, message=redact(describe(exc))[:500])
        return from_response(
            answer.status,
            answer.retry_after,
            redact(answer.excerpt.decode("utf-8", "replace"), channel.redactions),
        )
