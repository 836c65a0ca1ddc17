"""Waiting for a condition with a deadline: the one poller of the suite.

A fixed sleep followed by an assertion is a guess about the machine's speed; poll the
condition instead, and fail with what was being waited for.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool | Awaitable[bool]]


async def until(condition: Condition, within: float, every: float = 0.05) -> bool:
    """Poll `condition` (plain or async) every `every` seconds until it holds: True, or False
    once `within` seconds have passed (it is checked once more at the deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(min(every, max(0.0, deadline - loop.time())))  # polling, deadline


async def wait_until(
    condition: Condition, within: float = 3.0, what: str = "", every: float = 0.002
) -> None:
    """`until`, failing the test with `what` at the deadline."""
    if not await until(condition, within, every):
        raise AssertionError(f"not true within {within}s: {what or condition}")
