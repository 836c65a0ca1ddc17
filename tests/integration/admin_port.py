"""Reading a running service's admin port from a test: a page and its status, a status
waited for, one sample of /metrics."""

from __future__ import annotations

import aiohttp

from tests.catalogue import value
from tests.support.polling import until


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def poll_status(
    http: aiohttp.ClientSession, url: str, status: int, within: float = 60
) -> str:
    """Poll `url` until it answers `status`; its body."""
    answer: tuple[int, str] = (0, "")

    async def answers() -> bool:
        nonlocal answer
        answer = await get(http, url)
        return answer[0] == status

    assert await until(answers, within, every=0.1), f"{url} still answers {answer}"
    return answer[1]


async def metric(admin: str, name: str, **labels: str) -> float | None:
    """The sample `name` with exactly these labels on `admin`'s /metrics (admin is
    http://host:port); None while the service does not export it."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"{admin}/metrics") as response,
    ):
        return value(await response.text(), name, **labels)
