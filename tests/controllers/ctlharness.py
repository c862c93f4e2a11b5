"""What the controller tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0,
                     what: str = "condition") -> Any:
    """Poll ``check`` until it returns something true, and return that; fail after ``timeout``
    seconds of wall time (a poll may itself take seconds: a Docker listing, a retried call)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(*loops: Coroutine[Any, Any, Any]) -> AsyncIterator[list[asyncio.Task[Any]]]:
    """Run ``loops`` (controllers, fleets, informers: coroutines that run until cancelled) as
    tasks for the block; they are cancelled and awaited after it, also when it fails."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
