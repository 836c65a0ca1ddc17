"""The destination guard: never connect to our own networks unless the config allows it.

Channel URLs are typed in by people outside this team; a URL naming `127.0.0.1:6379`, the cloud
metadata address or an internal admin page would turn the service into a door into our network.
The check runs on the addresses a host name resolved to, inside the HTTP client, which then
connects to exactly the addresses that passed (the lean transport dials them itself; the
aiohttp transport's GuardedConnector hands aiohttp only those): there is no second lookup an
attacker's DNS server could answer differently (DNS rebinding). This module is the policy alone,
with no HTTP client in it, so the config's checks can ask it too.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult  # a TypedDict: the shape both transports resolve to

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


def is_dotted_quad(host: str) -> bool:
    """127.0.0.1, not 2130706433 or 0177.0.0.1: other spellings are refused when sending."""
    parts = host.split(".")
    return len(parts) == 4 and all(
        p.isascii() and p.isdigit() and int(p) <= 255 and (p == "0" or p[0] != "0") for p in parts
    )


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
