"""Workers that drain a work queue into a reconcile function, as sample-controller's do.

Flow: each worker takes a key (``get``), awaits ``reconcile(key)`` and then: on success
forgets the key's failures; on ``Requeue(after)`` forgets them too and parks the key for
``after`` seconds (asked for, not a failure); on any other exception logs it with its
traceback and re-adds the key with its back-off. Either way the key is ``done``, so a change
that arrived meanwhile is processed next. Workers stop when the queue is shut down.

``reconcile`` must be idempotent and level-triggered: it gets only a key, reads the current
state (an informer's cache) and writes the difference, so running it twice or late is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from .informer import Informer
from .tasks import spawn
from .workqueue import ShutDown, WorkQueue

log = logging.getLogger(__name__)

Reconcile = Callable[[str], Awaitable[None]]


class Requeue(Exception):
    """Raised by a reconcile to be called again for this key in ``after`` seconds
    (waiting for something, say), without counting as a failure."""

    def __init__(self, after: float) -> None:
        super().__init__(f"requeue after {after} s")
        self.after = after


async def run_workers(name: str, queue: WorkQueue, reconcile: Reconcile, *,
                      workers: int = 1) -> None:
    """Run ``workers`` workers until the queue shuts down (or this is cancelled)."""
    tasks = [spawn(_work(name, queue, reconcile), name=f"{name} worker {n}")
             for n in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _work(name: str, queue: WorkQueue, reconcile: Reconcile) -> None:
    while True:
        try:
            key = await queue.get()
        except ShutDown:
            return
        try:
            await reconcile(key)
        except Requeue as again:
            queue.forget(key)
            queue.add_after(key, again.after)
        except Exception:
            log.exception("%s: reconciling %s failed (%d earlier failures); retrying",
                          name, key, queue.num_requeues(key))
            queue.add_rate_limited(key)
        else:
            queue.forget(key)
        finally:
            queue.done(key)


async def run_controller(name: str, informers: Sequence[Informer], queue: WorkQueue,
                         reconcile: Reconcile, *, workers: int = 1) -> None:
    """A whole controller until cancelled: its informers, then (once every cache has synced,
    so no reconcile acts on a partial view) its workers; everything stops together."""
    tasks = [spawn(informer.run(), name=f"{name}: {informer.res.plural} informer")
             for informer in informers]
    try:
        for informer in informers:
            await informer.synced.wait()
        await run_workers(name, queue, reconcile, workers=workers)
    finally:
        queue.shut_down()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
