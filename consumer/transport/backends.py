"""The one place that picks the HTTP transport from `http.client`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import Transport

if TYPE_CHECKING:
    from ..config import HttpConfig
    from ..guard import Network


def open_transport(config: HttpConfig, allowed_networks: Iterable[Network]) -> Transport:
    """The configured transport; every connection it makes passes the destination guard.

    Call it inside the running event loop that will use it."""
    if config.client == "lean":
        from .lean import LeanTransport  # imported when chosen

        return LeanTransport(allowed_networks)
    from .aiohttp_client import AiohttpTransport, make_session

    return AiohttpTransport(make_session(allowed_networks))
