"""The destination guard, without a single packet leaving this machine.

Names resolve through a stub resolver and every socket is made by a factory that records the
address and refuses to create the socket, so even a broken guard could not reach the networks
named here. The positive controls show the recorder does see what the guard lets through.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING, Any

import pytest
from yarl import URL

from consumer.catalog import Channel
from consumer.guard import BlockedDestination, DestinationPolicy, special_use
from consumer.outcome import Kind, Outcome
from consumer.sender import Sender
from consumer.transport import Transport
from tests.support.resolver import StubResolver
from tests.transports import open_client

if TYPE_CHECKING:
    from .conftest import CatalogFactory, ChannelFactory, DeliveryFactory

PUBLIC_V4 = "8.8.8.8"
PUBLIC_V6 = "2606:4700:4700::1111"


@dataclass
class NoSockets:
    """A socket factory that records where a connection was going and never makes one."""

    attempts: list[str] = field(default_factory=list)

    def __call__(self, addr_info: tuple[Any, ...]) -> socket.socket:
        self.attempts.append(addr_info[4][0])
        raise OSError("tests never open sockets to these addresses")


NAMES: dict[str, list[str]] = {
    "private10.test": ["10.1.2.3"],
    "private172.test": ["172.16.5.4"],
    "private192.test": ["192.168.1.1"],
    "metadata.test": ["169.254.169.254"],
    "cgnat.test": ["100.64.0.1"],
    "multicast.test": ["224.0.0.251"],
    "broadcast.test": ["255.255.255.255"],
    "this-network.test": ["0.0.0.5"],
    "loopback.test": ["127.0.0.1"],
    "ula.test": ["fd00:ec2::254"],
    "linklocal6.test": ["fe80::1%1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "nat64-metadata.test": ["64:ff9b::a9fe:a9fe"],
    "6to4-private.test": ["2002:c0a8:101::1"],
    "sitelocal.test": ["fec0::1"],
    "rebinding.test": ["10.0.0.1", "127.0.0.1", "169.254.169.254"],
    "public.test": [PUBLIC_V4],
    "public6.test": [PUBLIC_V6],
    "mixed.test": ["10.0.0.1", PUBLIC_V4, "::1"],
}


@pytest.fixture
def channel_to(channel_cfg: ChannelFactory, build_catalog: CatalogFactory) -> Any:
    def make(url: str) -> Channel:
        _, catalog = build_catalog([channel_cfg("edge", timeout_seconds=2)])
        # Set after loading: the config already refuses some of these spellings.
        return replace(catalog.channels["edge"], url=URL(url))

    return make


Send = Callable[..., Any]


@pytest.fixture
async def send(channel_to: Any, bare_delivery: DeliveryFactory, client: str) -> AsyncIterator[Send]:
    """Send one delivery to `url` with the given allowed networks, through each transport in
    turn; returns (outcome, sockets)."""
    transports: list[Transport] = []

    async def run(url: str, allowed: Sequence[str] = ()) -> tuple[Outcome, NoSockets]:
        sockets = NoSockets()
        transport = open_client(
            client, allowed, resolver=StubResolver(NAMES), socket_factory=sockets
        )
        transports.append(transport)
        delivery = bare_delivery(channel_to(url))
        return await Sender(transport).send(delivery), sockets

    yield run
    for transport in transports:
        await transport.close()


BLOCKED_URLS = [
    *(f"http://{name}/hooks" for name in NAMES if not name.startswith(("public", "mixed"))),
    "http://10.0.0.1/hooks",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00::1]:8080/hooks",
    "http://[fe80::1]/hooks",
    "http://[::ffff:169.254.169.254]/hooks",
    "http://[::ffff:a9fe:a9fe]/hooks",
    "http://[64:ff9b::a00:1]/hooks",
    "http://[2002:a9fe:a9fe::]/hooks",
    "http://0.0.0.0:6379/",
    "http://[::]:6379/",
    "http://[::1]/hooks",
    "https://127.0.0.1/hooks",
    "http://2130706433/hooks",
    "http://0177.0.0.1/hooks",
    "http://127.1/hooks",
]


@pytest.mark.parametrize("url", BLOCKED_URLS)
async def test_internal_destinations_are_refused_before_any_connection(
    send: Send, url: str
) -> None:
    outcome, sockets = await send(url)
    assert sockets.attempts == []
    assert (outcome.kind, outcome.retryable) == (Kind.BLOCKED_DESTINATION, False)
    assert "blocked" in outcome.message


async def test_a_name_with_public_and_internal_addresses_connects_only_to_the_public_one(
    send: Send,
) -> None:
    outcome, sockets = await send("http://mixed.test/hooks")
    # The recorder proves the guard let something through, and exactly what.
    assert sockets.attempts == [PUBLIC_V4]
    assert outcome.kind is Kind.CONNECTION


@pytest.mark.parametrize(("name", "address"), [("public", PUBLIC_V4), ("public6", PUBLIC_V6)])
async def test_public_destinations_are_attempted(send: Send, name: str, address: str) -> None:
    outcome, sockets = await send(f"http://{name}.test/hooks")
    assert sockets.attempts == [address]
    assert outcome.kind is Kind.CONNECTION


@pytest.mark.parametrize(
    ("url", "allowed", "address"),
    [
        ("http://private10.test/hooks", ["10.0.0.0/8"], "10.1.2.3"),
        ("http://10.9.9.9/hooks", ["10.0.0.0/8"], "10.9.9.9"),
        ("http://mapped.test/hooks", ["10.0.0.0/8"], "::ffff:10.0.0.1"),
        ("http://ula.test/hooks", ["fd00::/8"], "fd00:ec2::254"),
    ],
)
async def test_allowed_networks_open_exactly_their_range(
    send: Send, url: str, allowed: list[str], address: str
) -> None:
    outcome, sockets = await send(url, allowed)
    assert sockets.attempts == [address]
    assert outcome.kind is Kind.CONNECTION
    outcome, sockets = await send("http://metadata.test/", allowed)
    assert (outcome.kind, sockets.attempts) == (Kind.BLOCKED_DESTINATION, [])


async def test_the_refusal_names_the_host_the_address_and_the_way_out(send: Send) -> None:
    outcome, _ = await send("http://metadata.test/latest/meta-data/")
    assert "metadata.test" in outcome.message
    assert "169.254.169.254 (link-local" in outcome.message
    assert "allowed_networks" in outcome.message


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "not globally routable"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback, as 127.0.0.1"),
        ("64:ff9b::7f00:1", "loopback, as 127.0.0.1"),
        ("2002:7f00:1::", "loopback, as 127.0.0.1"),
        ("::7f00:1", "reserved"),
        (PUBLIC_V4, None),
        (PUBLIC_V6, None),
        ("64:ff9b::808:808", None),
    ],
)
def test_special_use_addresses(address: str, why: str | None) -> None:
    assert special_use(ip_address(address)) == why


def test_mapped_addresses_follow_the_ipv4_rules_both_ways() -> None:
    policy = DestinationPolicy.of([ip_network("127.0.0.0/8")])
    assert policy.refusal(ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ip_address("::ffff:10.0.0.1")) is not None


def test_literal_hosts_are_checked_and_names_left_to_the_resolver() -> None:
    policy = DestinationPolicy()
    for host in ("example.com", "0x7f.1", PUBLIC_V4, PUBLIC_V6):
        policy.check_literal(host)  # names (0x7f.1 is one to a URL parser) go to the resolver
    for host in ("127.0.0.1", "::1", "2130706433", "127.1", "fe80::1%eth0"):
        with pytest.raises(BlockedDestination):
            policy.check_literal(host)
