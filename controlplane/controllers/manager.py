"""Run the control loops on the leader only: start them on gaining leadership, stop on losing it.

Leadership comes from a ``is_leader()`` callable: the embedded store's Raft role
(``RaftStore.is_leader``), or a Lease held through the API when the store is an external
etcd. The manager polls it (``POLL_SECONDS``), so loops start within that time of gaining
leadership, and cancels every loop at once when it is lost. Being cancelled is the only way a
loop stops: a loop that returns or raises is logged and the whole term is started again after
a pause (fresh loops, fresh shared informers): a loop rebuilt alone would find its dead
predecessor's handlers still on the informers it shares with the others. Loops must not rely on
being the only writer: a deposed leader may still be finishing a write, which is why every
controller write is a compare-and-swap on resourceVersion.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: How often leadership is checked (reading the Raft role is a few attribute reads): loops
#: start within this long of gaining it.
POLL_SECONDS = 0.05
#: Pause before restarting a loop that ended on its own.
RESTART_SECONDS = 1.0


@dataclass(frozen=True)
class Loop:
    """A named control loop: ``run()`` works until cancelled."""

    name: str
    run: Callable[[], Awaitable[None]]


class ControllerManager:
    """``make_loops`` gives the loops of one term of leadership: called each time leadership
    is gained, so every term starts from empty caches (and one informer factory per term)."""

    def __init__(self, is_leader: Callable[[], bool], make_loops: Callable[[], list[Loop]], *,
                 poll: float = POLL_SECONDS) -> None:
        self._is_leader = is_leader
        self._make_loops = make_loops
        self._poll = poll
        self._running: dict[str, asyncio.Task[None]] = {}

    @property
    def leading(self) -> bool:
        """Whether the loops are running now."""
        return bool(self._running)

    async def run(self) -> None:
        """Follow leadership until cancelled; the loops stop with it."""
        try:
            while True:
                leader = self._is_leader()
                if leader and not self._running:
                    loops = self._make_loops()
                    log.warning("became leader: starting %d control loops", len(loops))
                    for loop in loops:
                        self._running[loop.name] = asyncio.get_running_loop().create_task(
                            loop.run(), name=f"control loop {loop.name}")
                elif not leader and self._running:
                    log.warning("lost leadership: stopping the control loops")
                    await self._stop_all()
                elif ended := [name for name, task in self._running.items() if task.done()]:
                    for name in ended:
                        self._report_end(name, self._running[name])
                    await self._stop_all()
                    await asyncio.sleep(RESTART_SECONDS)
                    continue
                await asyncio.sleep(self._poll)
        finally:
            await self._stop_all()

    @staticmethod
    def _report_end(name: str, task: asyncio.Task[None]) -> None:
        failure = None if task.cancelled() else task.exception()
        if failure is None:
            log.error("control loop %s ended; restarting the control loops", name)
        else:
            log.error("control loop %s failed; restarting the control loops", name,
                      exc_info=failure)

    async def _stop_all(self) -> None:
        tasks, self._running = list(self._running.values()), {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
