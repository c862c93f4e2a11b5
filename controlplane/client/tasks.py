"""Background tasks of the client package, created through one guard that names each task and
logs how it ended, so that no loop dies unnoticed (kopf's habit)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Run ``coro`` as a task called ``name``; its end is logged (an exception as an error)."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    task.add_done_callback(_log_end)
    return task


def _log_end(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        log.debug("task %s stopped (cancelled)", task.get_name())
    elif (exc := task.exception()) is not None:
        log.error("task %s died", task.get_name(), exc_info=exc)
    else:
        log.debug("task %s ended", task.get_name())
