"""A rate-limited work queue of keys, with client-go's workqueue semantics, for asyncio.

Flow: ``add`` puts a key in line unless it waits there already (dirty); a key being processed
(between ``get`` and ``done``) is only marked dirty and goes back in line at ``done``, so no key
is ever processed by two workers at once and no change is lost. ``add_after`` parks a key until
its time (the earliest time wins when parked twice); ``add_rate_limited`` parks it for
``base_delay * 2**failures`` (capped at ``max_delay``), the failures counted per key until
``forget``. ``get`` waits for a key; after ``shut_down`` it raises ``ShutDown`` and keys still
in line are dropped.

Everything but ``get`` is synchronous and reads time only from the injected ``clock``:
``try_get`` promotes the parked keys that are due and pops one, so tests drive the ordering and
the delays with a fake clock. The one asyncio timer (``loop.call_later``, set for the earliest
parked key) only wakes waiting ``get`` calls; ``add_after`` therefore needs a running loop.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class ShutDown(Exception):
    """The queue was shut down: the worker should stop."""


class WorkQueue:
    def __init__(self, *, clock: Clock = time.monotonic, base_delay: float = 0.005,
                 max_delay: float = 1000.0) -> None:
        self._clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._line: deque[str] = deque()
        #: Keys that need processing: in line, or being processed and added again.
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        #: Parked keys: key -> when it is due; the heap may hold stale (later) entries.
        self._parked: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._failures: dict[str, int] = {}
        self._shut_down = False
        self._ready = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0

    def __len__(self) -> int:
        """Keys in line now (not the parked nor the ones being processed)."""
        return len(self._line)

    def len(self) -> int:
        return len(self)

    # ------------------------------------------------------------ adding

    def add(self, key: str) -> None:
        if self._shut_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._line.append(key)
            self._ready.set()

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed (at once when not positive)."""
        if self._shut_down:
            return
        if delay <= 0:
            self.add(key)
            return
        due = self._clock() + delay
        if key in self._parked and self._parked[key] <= due:
            return
        self._parked[key] = due
        heapq.heappush(self._heap, (due, key))
        self._arm(delay, due)

    def add_rate_limited(self, key: str) -> None:
        """Add ``key`` after its back-off: ``base_delay * 2**failures``, then count a failure."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # The exponent is capped so that a key failing for days cannot overflow a float.
        self.add_after(key, min(self.base_delay * 2.0 ** min(failures, 64), self.max_delay))

    def forget(self, key: str) -> None:
        """Stop counting ``key``'s failures (it was processed, or given up on)."""
        self._failures.pop(key, None)

    def num_requeues(self, key: str) -> int:
        return self._failures.get(key, 0)

    # ------------------------------------------------------------ taking

    def try_get(self) -> str | None:
        """The next key due, now marked as being processed, or None when there is none."""
        self._promote()
        if self._shut_down or not self._line:
            return None
        key = self._line.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    async def get(self) -> str:
        """Wait for the next key; ``ShutDown`` once the queue is shut down."""
        while True:
            if self._shut_down:
                raise ShutDown
            key = self.try_get()
            if key is not None:
                return key
            self._ready.clear()
            await self._ready.wait()

    def done(self, key: str) -> None:
        """Processing of ``key`` ended; if it was added meanwhile, it goes back in line."""
        self._processing.discard(key)
        if key in self._dirty and not self._shut_down:
            self._line.append(key)
            self._ready.set()

    def shut_down(self) -> None:
        """Stop: waiting and later ``get`` calls raise ``ShutDown``; keys in line are dropped."""
        self._shut_down = True
        self._line.clear()
        self._dirty.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ready.set()

    @property
    def shutting_down(self) -> bool:
        return self._shut_down

    # ------------------------------------------------------------ parked keys

    def _promote(self) -> None:
        """Move the parked keys that are due into line."""
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, key = heapq.heappop(self._heap)
            if self._parked.get(key) == due:
                del self._parked[key]
                self.add(key)

    def _arm(self, delay: float, due: float) -> None:
        """Have the loop wake the getters when the earliest parked key is due."""
        if self._timer is not None and self._timer_due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake)
        self._timer_due = due

    def _wake(self) -> None:
        self._timer = None
        self._promote()
        if self._parked:
            due = min(self._parked.values())
            self._arm(max(due - self._clock(), 0.0), due)
        if self._line:
            self._ready.set()
