"""The aiohttp transport: one `ClientSession` for the process, pooled per host, guarded.

The tested alternative to the lean transport (`http.client: aiohttp`)."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping

import aiohttp
from aiohappyeyeballs import SocketFactoryType
from aiohttp.abc import AbstractResolver
from yarl import URL

from ..guard import DestinationPolicy, GuardedConnector, Network
from . import EXCERPT_BYTES, MAX_HEADER_BYTES, MAX_HEADERS, Answer, TransportError, describe


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
        max_headers=MAX_HEADERS,
        trust_env=False,  # an HTTP(S)_PROXY from the environment would bypass the guard
    )


class AiohttpTransport:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(
        self,
        url: URL,
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,  # noqa: ASYNC109 - the seam's deadline
        tls: ssl.SSLContext | None,
    ) -> Answer:
        try:
            # `total` bounds the whole attempt, however slowly a receiver drips its answer.
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
                ssl=tls if tls is not None else True,
            ) as response:
                # At most this much is read; leaving the block closes a connection whose body
                # was not read to its end, so a huge answer costs us nothing more.
                excerpt = await response.content.read(EXCERPT_BYTES)
                return Answer(response.status, response.headers.get("Retry-After"), excerpt)
        except TimeoutError:
            raise  # aiohttp's timeouts are ClientErrors too; they are the seam's TimeoutError
        except aiohttp.ClientError as exc:
            raise TransportError(describe(exc)) from exc

    async def close(self) -> None:
        await self._session.close()
