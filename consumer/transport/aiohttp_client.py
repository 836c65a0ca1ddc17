"""The aiohttp transport: one `ClientSession` for the process, pooled per host, guarded.

The tested alternative to the lean transport (`http.client: aiohttp`)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohappyeyeballs import SocketFactoryType
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ..guard import DestinationPolicy, Network
from . import EXCERPT_BYTES, MAX_HEADER_BYTES, MAX_HEADERS, Answer, TransportError, describe

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace


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


class GuardedResolver(AbstractResolver):
    """Resolves with `inner`, then keeps only the addresses the policy allows."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return self._policy.filter(host, await self._inner.resolve(host, port, family))

    async def close(self) -> None:
        await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector that connects only where the policy allows.

    Host names go through GuardedResolver (aiohttp caches only what passed); IP literals never
    reach a resolver, so `connect` checks them first, before the connection pool is consulted.
    """

    def __init__(
        self, policy: DestinationPolicy, resolver: AbstractResolver | None = None, **options: Any
    ) -> None:
        inner = resolver if resolver is not None else aiohttp.DefaultResolver()
        super().__init__(resolver=GuardedResolver(policy, inner), **options)
        self._policy = policy
        self._guarded_resolver = self._resolver

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> aiohttp.connector.Connection:
        host = req.url.raw_host
        if host is not None:
            self._policy.check_literal(host)
        return await super().connect(req, traces, timeout)

    async def close(self, *, abort_ssl: bool = False) -> None:
        await super().close(abort_ssl=abort_ssl)
        await self._guarded_resolver.close()  # ours, so the base class does not close it
