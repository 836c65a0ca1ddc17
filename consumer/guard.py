"""The destination guard: never connect to our own networks unless the config allows it.

Channel URLs are typed in by people outside this team; a URL naming `127.0.0.1:6379`, the cloud
metadata address or an internal admin page would turn the service into a door into our network.
The check runs on the addresses a host name resolved to, inside the connector, and aiohttp then
connects to exactly the addresses that passed: there is no second lookup an attacker's DNS
server could answer differently (DNS rebinding).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from .config import is_dotted_quad

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

_NAT64: Final = IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NOT_ALLOWED: Final = "not in allowed_networks"


class BlockedDestination(Exception):
    """Every address of the destination is refused; nothing was sent."""

    def __init__(self, host: str, refused: Sequence[tuple[str, str]]) -> None:
        self.host = host
        self.refused = tuple(refused)  # (address, why)
        shown = ", ".join(f"{address} ({why})" for address, why in self.refused[:4])
        hint = ""
        if any(why.endswith(_NOT_ALLOWED) for _, why in self.refused):
            hint = "; add its network to allowed_networks if it is meant to be reached"
        super().__init__(f"destination {host} blocked: {shown or 'no address'}{hint}")


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 form stands for: IPv4-mapped, NAT64 (well-known prefix), 6to4."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def special_use(address: Address) -> str | None:
    """Why `address` is not a public unicast address, or None when it is."""
    if isinstance(address, IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            why = special_use(inner)
            return None if why is None else f"{why}, as {inner}"
        if address.is_site_local:  # deprecated fec0::/10; Python still calls it global
            return "site-local"
    # Most specific first: the reason is what an operator reads in the dead letter.
    for why, hit in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),  # 169.254.169.254, the metadata service
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),  # 100.64.0.0/10 and the like
    ):
        if hit:
            return why
    return None


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Public unicast addresses are allowed; anything else only inside `allowed`."""

    allowed: tuple[Network, ...] = ()

    @classmethod
    def of(cls, networks: Iterable[Network]) -> DestinationPolicy:
        return cls(tuple(networks))

    def refusal(self, address: Address) -> str | None:
        """Why a connection to `address` is refused, or None when it may be made."""
        candidates: list[Address] = [address]
        if isinstance(address, IPv6Address) and (inner := embedded_ipv4(address)) is not None:
            candidates.append(inner)  # `::ffff:127.0.0.1` is allowed wherever 127.0.0.1 is
        if any(c in net for c in candidates for net in self.allowed):
            return None
        why = special_use(address)
        return None if why is None else f"{why}, {_NOT_ALLOWED}"

    def check_literal(self, host: str) -> None:
        """Refuse an IP-literal host; aiohttp connects to those without asking the resolver."""
        why = _literal_refusal(self, host)  # asked before every request: the verdict is cached
        if why is not None:
            raise BlockedDestination(host, [(host, why)])

    def filter(self, host: str, results: Sequence[ResolveResult]) -> list[ResolveResult]:
        """The results that may be connected to; BlockedDestination when none may."""
        kept: list[ResolveResult] = []
        refused: list[tuple[str, str]] = []
        for result in results:
            address = _parse(result["host"])
            why = "unreadable address" if address is None else self.refusal(address)
            if why is None:
                kept.append(result)
            else:
                refused.append((result["host"], why))
        if not kept:
            raise BlockedDestination(host, refused)
        return kept


def literal_address(url: str) -> Address | None:
    """The address a URL's host is written as (dotted-quad IPv4 or bracketed IPv6), else None:
    what `check-config` can judge without DNS."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if host is None or not (":" in host or is_dotted_quad(host)):
        return None
    return _parse(host)


@lru_cache(maxsize=1024)
def _literal_refusal(policy: DestinationPolicy, host: str) -> str | None:
    if ":" in host:
        address = _parse(host)
    elif host.replace(".", "").isdigit():
        if not is_dotted_quad(host):
            # 2130706433, 0177.0.0.1, 127.1: spellings filters get wrong; aiohttp refuses
            # them too, so they could never be delivered anyway.
            return f"ambiguous spelling of {_legacy(host)}; write a dotted quad"
        address = _parse(host)
    else:
        return None  # a name: the resolver checks what it resolves to
    return "unreadable address" if address is None else policy.refusal(address)


def _parse(text: str) -> Address | None:
    try:
        return ip_address(text)  # accepts an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return None


def _legacy(host: str) -> str:
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return "no address"


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
