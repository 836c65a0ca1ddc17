"""The lean transport: POST-only HTTP/1.1 over pooled keep-alive connections (`http.client: lean`).

Per (host, port, TLS context) a stack of idle connections, the most recently used first; an
idle one is closed after KEEPALIVE_SECONDS. A new connection goes only to an address the
destination guard approved: a name is resolved once (cached DNS_TTL_SECONDS), the guard filters
the answers, and the socket connects to an approved address itself (Happy Eyeballs across them,
with aiohappyeyeballs as aiohttp does), so no second look-up can be answered differently; the
Host header and TLS SNI carry the name, and TLS verifies the certificate and host name with the
channel's context.

One retry, and only this one: a reused connection that closes before a single byte of the
answer (the receiver's keep-alive timeout racing our request) is retried once on a fresh
connection. The receiver may have read the first request before closing, so it can rarely
get the delivery twice; the delivery id is the same on both (docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Final

import aiohappyeyeballs
from aiohttp.abc import AbstractResolver
from yarl import URL

from ..guard import DestinationPolicy, Network
from . import Answer, TransportError
from .exchange import ClosedBeforeAnswer, Connection

AddrInfo = tuple[Any, ...]  # (family, type, proto, canonname, sockaddr), as socket.getaddrinfo
SocketFactory = Callable[[AddrInfo], socket.socket]
PoolKey = tuple[str, int, ssl.SSLContext | None]

KEEPALIVE_SECONDS: Final = 15.0  # aiohttp's default; receivers closing sooner cost one retry
DNS_TTL_SECONDS: Final = 60.0
_MAX_ROUTES: Final = 4096  # rendered request prefixes kept; a reload makes new channel URLs


@dataclass(frozen=True, slots=True)
class _Route:
    """What is constant for one channel URL: where to connect and the start of its request."""

    url: URL  # held, so the id the cache is keyed on stays this URL's
    given_tls: ssl.SSLContext | None
    host: str  # for DNS, SNI and the certificate check
    port: int
    tls: ssl.SSLContext | None  # None: plain http
    key: PoolKey
    prefix: bytes  # request line and Host header


class LeanTransport:
    def __init__(
        self,
        allowed_networks: Iterable[Network],
        *,
        resolver: AbstractResolver | None = None,
        socket_factory: SocketFactory | None = None,
    ) -> None:
        self._policy = DestinationPolicy.of(allowed_networks)
        self._resolver = resolver
        self._socket_factory = socket_factory  # None: plain sockets
        self._loop: asyncio.AbstractEventLoop | None = None
        self._routes: dict[int, _Route] = {}
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._all_gone = asyncio.Event()
        self._addresses: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._default_tls: ssl.SSLContext | None = None
        self._closed = False

    async def post(
        self,
        url: URL,
        headers: Mapping[str, str],
        body: bytes,
        timeout: float,  # noqa: ASYNC109 - the seam's deadline, enforced by loop timers
        tls: ssl.SSLContext | None,
    ) -> Answer:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout
        route = self._routes.get(id(url))
        if route is None or route.url is not url or route.given_tls is not tls:
            route = self._route(url, tls)
        request = route.prefix + _render(headers, len(body)) + body
        connection = self._take(route.key, now)
        if connection is None:
            connection = await self._connect(route, deadline)
            return await self._exchange(route, connection, request, deadline, retry=False)
        return await self._exchange(route, connection, request, deadline, retry=True)

    async def close(self) -> None:
        """Close every connection and wait (a second at most) until each is gone, so that TLS
        says goodbye and no socket outlives the transport."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        if self._open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), 1.0)
        if self._resolver is not None:
            await self._resolver.close()

    def _lost(self, connection: Connection) -> None:
        self._open.discard(connection)
        if self._closed and not self._open:
            self._all_gone.set()

    async def _exchange(
        self, route: _Route, connection: Connection, request: bytes, deadline: float, retry: bool
    ) -> Answer:
        try:
            answer = await connection.send(request, deadline)
        except ClosedBeforeAnswer:
            connection.close()
            if not retry:
                raise
            fresh = await self._connect(route, deadline)
            return await self._exchange(route, fresh, request, deadline, retry=False)
        except BaseException:
            connection.close()
            raise
        if connection.reusable and not self._closed:
            connection.idle_since = self._loop.time() if self._loop is not None else 0.0
            self._idle.setdefault(route.key, []).append(connection)
            self._sweep_later()
        else:
            connection.close()
        return answer

    def _take(self, key: PoolKey, now: float) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.close()
        return None

    def _sweep_later(self) -> None:
        if self._sweeper is None and self._loop is not None:
            self._sweeper = self._loop.call_later(KEEPALIVE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Close what idled too long, so a channel that went quiet holds no sockets."""
        self._sweeper = None
        assert self._loop is not None
        now = self._loop.time()
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < KEEPALIVE_SECONDS]
            for connection in idle:
                if connection not in keep:
                    connection.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweep_later()

    def _route(self, url: URL, tls: ssl.SSLContext | None) -> _Route:
        host = url.raw_host or ""
        port = url.port or 0
        context = None
        if url.scheme == "https":
            context = tls if tls is not None else self._system_tls()
        target = url.raw_path_qs or "/"
        prefix = f"POST {target} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
        route = _Route(url, tls, host, port, context, (host, port, context), prefix.encode())
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        self._routes[id(url)] = route
        return route

    def _system_tls(self) -> ssl.SSLContext:
        if self._default_tls is None:
            self._default_tls = ssl.create_default_context()
            self._default_tls.set_alpn_protocols(["http/1.1"])
        return self._default_tls

    async def _connect(self, route: _Route, deadline: float) -> Connection:
        loop = self._loop
        assert loop is not None
        if self._closed:
            raise TransportError("the transport is closed")
        async with asyncio.timeout_at(deadline):
            infos = await self._approved(route.host, route.port, loop.time())
            # Happy Eyeballs (RFC 8305) over the approved addresses, as aiohttp does: a second
            # address is tried 250 ms into the first, so a dead IPv6 route costs no attempt.
            sock = await aiohappyeyeballs.start_connection(
                infos, happy_eyeballs_delay=0.25, socket_factory=self._socket_factory
            )
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, self._lost),
                    sock=sock,
                    ssl=route.tls,
                    server_hostname=route.host if route.tls is not None else None,
                )
            except BaseException:
                sock.close()
                raise
        self._open.add(connection)
        return connection

    async def _approved(self, host: str, port: int, now: float) -> list[AddrInfo]:
        """The addresses of `host` the guard allows; BlockedDestination when there are none."""
        self._policy.check_literal(host)
        try:
            literal = ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            return [_addr_info(family, host, port)]
        cached = self._addresses.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        if self._resolver is None:
            from aiohttp import DefaultResolver  # its thread pool or aiodns, as aiohttp's path

            self._resolver = DefaultResolver()
        results = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        infos = [
            _addr_info(result["family"], result["host"], result["port"])
            for result in self._policy.filter(host, results)
        ]
        self._addresses[(host, port)] = (now + DNS_TTL_SECONDS, infos)
        return infos


def _addr_info(family: int, host: str, port: int) -> AddrInfo:
    address = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
    return (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)


def _render(headers: Mapping[str, str], length: int) -> bytes:
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    # One CR and one LF per line: a value carrying its own would smuggle a header in.
    if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
        raise ValueError("a request header holds a line break")
    return f"{lines}Content-Length: {length}\r\n\r\n".encode()


__all__ = ["LeanTransport", "TransportError"]
