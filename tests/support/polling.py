"""Waiting for a condition with a deadline: the one poller of the suite.

A fixed sleep followed by an assertion is a guess about the machine's speed; poll the
condition instead, and fail with what was being waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool | Awaitable[bool]]


async def until(
    condition: Condition, within: float, every: float = 0.05, news: asyncio.Event | None = None
) -> bool:
    """Poll `condition` (plain or async) every `every` seconds until it holds: True, or False
    once `within` seconds have passed (it is checked once more at the deadline). With `news`
    (an event whoever changes what the condition reads sets, e.g. a receiver on each
    request) it is checked again as soon as that is set, and `every` is only the fallback."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if news is not None:
            news.clear()  # before the check: what is set during an async check is not lost
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if loop.time() >= deadline:
            return False
        pause = min(every, max(0.0, deadline - loop.time()))
        if news is None:
            await asyncio.sleep(pause)  # polling, deadline
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), pause)


async def wait_until(
    condition: Condition, within: float = 3.0, what: str = "", every: float = 0.002
) -> None:
    """`until`, failing the test with `what` at the deadline."""
    if not await until(condition, within, every):
        raise AssertionError(f"not true within {within}s: {what or condition}")
