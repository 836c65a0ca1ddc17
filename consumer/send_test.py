"""`webhook-consumer send-test`: one real, signed request to a channel, shown in full."""

from __future__ import annotations

import time

from .attributes import open_store
from .catalog import Catalog
from .config import ServiceConfig
from .delivery import Delivery, delivery_id
from .outcome import Kind
from .sender import Sender
from .transport.backends import open_transport

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


async def send_test(
    config: ServiceConfig, channel_name: str, campaign: str | None, users: list[str]
) -> int:
    catalog = Catalog.from_config(config)
    channel = catalog.channels.get(channel_name)
    if channel is None:
        print(f"unknown channel {channel_name!r}; expected one of: {', '.join(catalog.channels)}")
        return EXIT_USAGE
    template_param: dict[str, object] = {}
    if campaign is not None:
        route = next((r for r in catalog.routes.get(campaign, ()) if r.channel is channel), None)
        if route is None:
            print(f"campaign {campaign!r} does not send to channel {channel_name!r}")
            return EXIT_USAGE
        template_param = dict(route.template_param)
    found = {}
    if users:
        store = open_store(config.attributes)
        try:
            found = await store.get_many(users)
        finally:
            await store.close()
    user_attr = [
        {k: found[u][k] for k in channel.user_attributes if k in found[u]}
        for u in users
        if u in found
    ]
    test_id = f"send-test-{time.time_ns()}"
    delivery = Delivery(
        id=delivery_id(channel.name, [test_id]),
        channel=channel,
        campaign_id=campaign or "",
        template_param=template_param,
        user_attr=user_attr,
        events=[],
        sources=[],
        attempts=1,
    )
    transport = open_transport(config.http, config.allowed_networks)
    try:
        sender = Sender(transport)
        body, headers = sender.prepare(delivery)
        started = time.perf_counter()
        outcome = await sender.post(delivery, body, headers)
        latency_ms = (time.perf_counter() - started) * 1000
    finally:
        await transport.close()
    # Plain print, not rich: the body must come out on one line, byte for byte, whatever the
    # terminal (rich wraps at its width, 80 columns when piped).
    print(f"POST {channel.url}")
    print(f"delivery id  {delivery.id}")
    print(f"signature    {headers['X-gio-signature']}")
    print(f"body         {body.decode()}")
    if outcome.kind is Kind.BLOCKED_DESTINATION:
        print(f"blocked      {outcome.message}")
        print("             nothing was sent (see allowed_networks)")
        return EXIT_FAILURE
    status = outcome.status if outcome.status is not None else outcome.kind.value
    print(f"status       {status}  ({latency_ms:.0f} ms)")
    print(f"response     {outcome.message[:300]}")
    return EXIT_OK if outcome.ok else EXIT_FAILURE
