"""MemoryStore: the in-process fake of the Store interface, for fast tests and hollow clusters.

Same state machine and command checks as RaftStore, committed by applying directly: a write is
acknowledged once applied, and every read is trivially linearizable.
"""

from __future__ import annotations

from raftstore.base import StateMachineStore
from raftstore.commands import Command
from raftstore.statemachine import DEFAULT_HISTORY_LIMIT, KVStateMachine
from raftstore.store import Member, Status, StoreError, TxnResult


class MemoryStore(StateMachineStore):
    def __init__(self, *, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        super().__init__()
        self._state = KVStateMachine(history_limit=history_limit)
        self._applied = 0

    @property
    def _sm(self) -> KVStateMachine:
        return self._state

    async def _submit(self, command: Command) -> TxnResult | StoreError:
        with self._lock:
            result = self._state.apply(command)
            self._applied += 1
        self._changed()
        return result

    async def _barrier(self) -> None:
        return None

    async def status(self) -> Status:
        with self._lock:
            return Status(
                members=(Member("memory", "", is_leader=True),),
                leader="memory",
                term=1,
                applied_index=self._applied,
                revision=self._state.revision,
                compact_revision=self._state.compact_revision,
            )
