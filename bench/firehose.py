"""S0a and S0c: the HTTP ceilings. One Python process POSTs pre-signed bodies, the size the
service sends, to the same receiver paths with the same concurrency, each with a fresh delivery
id. No Kafka, no work per request but the request.

S0a is stock aiohttp (a `ClientSession`, the body read whole), S0c the lean transport
(`consumer/transport/lean.py`); both on uvloop with the collector tuned as `run` tunes it, so
each is the strongest figure of its client.

    python -m bench.firehose BASE_URL --requests N --concurrency C [--client aiohttp|lean]
        [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from collections.abc import Awaitable, Callable
from ipaddress import ip_network

import aiohttp
from yarl import URL

from consumer.payload import encode_body
from consumer.running import tune_gc
from consumer.signing import sign
from consumer.transport.lean import LeanTransport

from .workload import CHANNELS, TEMPLATE, USER_ATTRIBUTES, attributes, path, secret

Request = tuple[URL, bytes, dict[str, str]]
Post = Callable[[Request, int], Awaitable[bool]]  # (request, delivery number) -> answered 200


def _requests(base: str) -> list[Request]:
    """One pre-built, pre-signed request per channel, as the service would send them."""
    user = attributes(1)
    prepared = []
    for channel in CHANNELS:
        body = encode_body(channel, TEMPLATE, [{k: user[k] for k in USER_ATTRIBUTES}])
        headers = {
            "Content-Type": "application/json",
            "X-gio-signature": sign(body, secret(channel)),
            "X-gio-attempt": "1",
            "User-Agent": "webhook-consumer/bench",
        }
        prepared.append((URL(base + path(channel)), body, headers))
    return prepared


async def fire(base: str, requests: int, concurrency: int, client: str) -> int:
    """Send, then wait for SIGTERM: the harness reads this process's CPU while it is alive."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    prepared = itertools.cycle(_requests(base))
    left = iter(range(requests))  # the request number is its delivery id
    failures = 0

    async def worker(post: Post) -> None:
        nonlocal failures
        for number in left:
            failures += not await post(next(prepared), number)

    if client == "lean":
        transport = LeanTransport([ip_network("127.0.0.0/8")])

        async def lean(request: Request, number: int) -> bool:
            url, body, headers = request
            headers = {**headers, "X-gio-delivery-id": str(number)}
            return (await transport.post(url, headers, body, 30.0, None)).status == 200

        try:
            await asyncio.gather(*(worker(lean) for _ in range(concurrency)))
        finally:
            await transport.close()
    else:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def stock(request: Request, number: int) -> bool:
                url, body, headers = request
                headers = {**headers, "X-gio-delivery-id": str(number)}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return response.status == 200

            await asyncio.gather(*(worker(stock) for _ in range(concurrency)))
    await stop.wait()
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--client", choices=("aiohttp", "lean"), default="aiohttp")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    tune_gc()
    sending = fire(args.base, args.requests, args.concurrency, args.client)
    if args.loop == "uvloop":
        import uvloop

        failures = uvloop.run(sending)
    else:
        failures = asyncio.run(sending)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
