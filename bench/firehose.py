"""S0a: the HTTP ceiling. One Python process POSTs pre-signed bodies, the size the service sends,
to the same receiver paths with the same concurrency. No Kafka, no work per request.

    python -m bench.firehose BASE_URL --requests N --concurrency C
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal

import aiohttp

from consumer.payload import encode_body
from consumer.signing import sign

from .workload import CHANNELS, TEMPLATE, USER_ATTRIBUTES, attributes, path, secret


def _requests(base: str) -> list[tuple[str, bytes, dict[str, str]]]:
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
        prepared.append((base + path(channel), body, headers))
    return prepared


async def fire(base: str, requests: int, concurrency: int) -> int:
    """Send, then wait for SIGTERM: the harness reads this process's CPU while it is alive."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    prepared = itertools.cycle(_requests(base))
    left = iter(range(requests))  # the request number is its delivery id
    failures = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failures
            for number in left:
                url, body, headers = next(prepared)
                headers = {**headers, "X-gio-delivery-id": str(number)}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    failures += response.status != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    await stop.wait()
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args()
    raise SystemExit(1 if asyncio.run(fire(args.base, args.requests, args.concurrency)) else 0)


if __name__ == "__main__":
    main()
