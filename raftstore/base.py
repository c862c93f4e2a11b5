"""The Store surface shared by the backends that hold a KVStateMachine in this process.

``StateMachineStore`` turns Store calls into checked commands and hands them to ``_submit``
(direct apply in MemoryStore, the Raft log in RaftStore); reads take ``_barrier`` first unless
serializable, then read the local state machine under ``_lock``. Watches pull their events from
the state machine's history whenever ``_changed()`` says the revision moved, so a watcher that
falls behind (or a replica that installed a snapshot) either catches up from history or gets
``Compacted``; nothing is pushed into unbounded per-watcher queues.
"""

from __future__ import annotations

import abc
import asyncio
import threading
import uuid
from collections.abc import AsyncGenerator, Sequence

from raftstore.commands import Command, compact_command, txn_command
from raftstore.statemachine import KVStateMachine
from raftstore.store import (
    Compare,
    Event,
    EventType,
    KeyValue,
    Op,
    RangeResult,
    Store,
    StoreError,
    TxnResult,
)


class StateMachineStore(Store):
    """Store methods over a local KVStateMachine; subclasses decide how commands commit."""

    def __init__(self) -> None:
        # The state machine may be mutated from another thread (pysyncobj's); every read
        # takes this lock, and so does every apply.
        self._lock = threading.Lock()
        self._watchers: set[asyncio.Event] = set()

    @property
    @abc.abstractmethod
    def _sm(self) -> KVStateMachine:
        """The current state machine (RaftStore's may be replaced by a snapshot install)."""

    @abc.abstractmethod
    async def _submit(self, command: Command) -> TxnResult | StoreError:
        """Commit ``command`` and return what the state machine answered."""

    @abc.abstractmethod
    async def _barrier(self) -> None:
        """Return once the local state machine reflects every write acknowledged so far."""

    def _changed(self) -> None:
        """Wake the watchers; call on the event loop after the state machine advanced."""
        for wake in self._watchers:
            wake.set()

    @staticmethod
    def _request_id() -> bytes:
        return uuid.uuid4().bytes

    def digest(self) -> tuple[int, str]:
        """(revision, hash) of the local replica's state, for comparing replicas."""
        with self._lock:
            return self._sm.revision, self._sm.digest()

    # -- reads ----------------------------------------------------------------------------

    async def get(self, key: str, *, serializable: bool = False) -> tuple[KeyValue | None, int]:
        if not serializable:
            await self._barrier()
        with self._lock:
            sm = self._sm
            return sm.get(key), sm.revision

    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_key: str | None = None,
        revision: int = 0,
        serializable: bool = False,
    ) -> RangeResult:
        if not serializable:
            await self._barrier()
        with self._lock:
            return self._sm.range(
                prefix, limit=limit, continue_key=continue_key, revision=revision
            )

    # -- writes ---------------------------------------------------------------------------

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        result = await self._submit(txn_command(self._request_id(), compares, success, failure))
        if isinstance(result, StoreError):
            raise result
        return result

    async def compact(self, revision: int) -> None:
        result = await self._submit(compact_command(self._request_id(), revision))
        if isinstance(result, StoreError):
            raise result

    # -- watch ----------------------------------------------------------------------------

    async def watch(
        self, prefix: str, *, start_revision: int = 0, progress_interval: float = 5.0
    ) -> AsyncGenerator[Event, None]:
        wake = asyncio.Event()
        self._watchers.add(wake)
        try:
            with self._lock:
                next_rev = start_revision or self._sm.revision + 1
            while True:
                wake.clear()
                with self._lock:
                    sm = self._sm
                    reached = sm.revision
                    events = list(sm.events_since(next_rev, prefix))
                for event in events:
                    yield event
                next_rev = max(next_rev, reached + 1, events[-1].revision + 1 if events else 0)
                try:
                    await asyncio.wait_for(wake.wait(), progress_interval)
                except asyncio.TimeoutError:
                    yield Event(EventType.PROGRESS, next_rev - 1)
        finally:
            self._watchers.discard(wake)
