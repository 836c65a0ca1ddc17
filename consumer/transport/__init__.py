"""The sender's seam: a transport moves one POST's bytes and reports what came back.

The sender builds the request (URL, headers, body, deadline) and classifies the answer into an
Outcome; a transport only moves bytes: no retries but the lean one's documented stale-connection
case, no classification, no logging per request. `backends.open_transport` picks one from
`http.client`; this module imports nothing concrete.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from yarl import URL

EXCERPT_BYTES: Final = 2048  # kept for logs and dead letters; the rest of a body is never read
MAX_HEADER_BYTES: Final = 8190  # per response line and per header name or value; more is an error
MAX_HEADERS: Final = 128  # response header fields (trailers included); more is an error


@dataclass(frozen=True, slots=True)
class Answer:
    """What the receiver said: its status, `Retry-After` as sent, the start of its body."""

    status: int
    retry_after: str | None
    excerpt: bytes  # at most EXCERPT_BYTES


class TransportError(Exception):
    """No answer: the connection could not be made, broke, or carried no valid HTTP response.

    Its text says what happened, for a dead letter; it never holds a request header."""


class Transport(Protocol):
    async def post(
        self,
        url: URL,
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,  # noqa: ASYNC109 - a deadline for the whole attempt, the seam's own
        tls: ssl.SSLContext | None,
    ) -> Answer:
        """POST `body` to `url` and return the answer's status line and headers with the first
        EXCERPT_BYTES of its body, all within `timeout` seconds.

        Raises `consumer.guard.BlockedDestination` (nothing was sent), TimeoutError (no answer
        in time), TransportError or OSError. `tls` is the channel's context for https (None:
        the system's CAs); certificates and host names are always verified.
        """
        ...

    async def close(self) -> None:
        """Close every connection; the transport is not used again."""
        ...


def describe(exc: BaseException) -> str:
    """`Type: text` of an exception, the way dead letters name a failure."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
