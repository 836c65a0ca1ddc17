"""Both transports for one parametrized test set: the `client` fixture (tests/conftest.py) names
one, `open_client` opens it with the same guard, resolver and sockets either way."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_network
from typing import Any

from consumer.transport import Transport
from consumer.transport.aiohttp_client import AiohttpTransport, make_session
from consumer.transport.lean import LeanTransport

CLIENTS = ("lean", "aiohttp")


def open_client(
    client: str, allowed: Iterable[str] = ("127.0.0.0/8",), **stand_ins: Any
) -> Transport:
    """`stand_ins`: `resolver` and `socket_factory`, for tests that must not touch DNS or sockets.
    Call inside the event loop that uses it."""
    networks = [ip_network(a) for a in allowed]
    if client == "lean":
        return LeanTransport(networks, **stand_ins)
    assert client == "aiohttp", client
    return AiohttpTransport(make_session(networks, **stand_ins))
