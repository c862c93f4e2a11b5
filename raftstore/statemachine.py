"""The replicated state machine: a revisioned key-value map with a bounded event history.

Pure and deterministic: no I/O, no clock, no randomness, no threads. Every replica applies the
same checked commands (raftstore.commands) in the same order and reaches the same state, which
``digest()`` summarises. The Raft shell (raftstore.raft) and the in-memory fake
(raftstore.memory) wrap it; snapshots pickle its attributes, so they stay plain and compact.

Flow: ``apply(command)`` dispatches to ``_txn`` or ``_compact``; reads (``get``, ``range``,
``events_since``) never change anything. A record is ``(value, create_revision, mod_revision,
version)``; the history holds ``(revision, key, record_after | None, record_before | None)``
and keeps every event of revision >= ``compact_revision``.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from raftstore.commands import Command
from raftstore.store import (
    Compacted,
    Event,
    EventType,
    FutureRevision,
    InvalidRequest,
    KeyValue,
    OpResult,
    RangeResult,
    StoreError,
    TxnResult,
    prefix_end,
)

Record = tuple[bytes, int, int, int]  # value, create_revision, mod_revision, version
HistoryEntry = tuple[int, str, Record | None, Record | None]

DEFAULT_HISTORY_LIMIT = 50_000  # events kept for watches and past-revision reads
DEFAULT_DEDUP_LIMIT = 10_000  # request ids remembered for at-most-once retries


def _kv(key: str, record: Record) -> KeyValue:
    return KeyValue(key, record[0], record[1], record[2], record[3])


def _in_range(key: str, start: str, end: str) -> bool:
    return key >= start and (end == "" or key < end)


_ORDER = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}
_FIELD = {"value": 0, "create_revision": 1, "mod_revision": 2, "version": 3}


class KVStateMachine:
    """etcd's MVCC semantics, reduced to the current map plus an undo-able history."""

    def __init__(
        self, *, history_limit: int = DEFAULT_HISTORY_LIMIT, dedup_limit: int = DEFAULT_DEDUP_LIMIT
    ) -> None:
        self.revision = 1  # etcd starts at 1 with an empty keyspace
        self.compact_revision = 0
        self.history_limit = history_limit
        self.dedup_limit = dedup_limit
        self._data: dict[str, Record] = {}
        self._keys: list[str] = []  # sorted
        self._history: list[HistoryEntry] = []
        self._seen: OrderedDict[bytes, TxnResult | StoreError] = OrderedDict()

    # -- writes ---------------------------------------------------------------------------

    def apply(self, command: Command) -> TxnResult | StoreError:
        """Apply one checked command; errors are returned (never raised) so batches go on."""
        request_id = command[1]
        if request_id is not None and request_id in self._seen:
            return self._seen[request_id]
        if command[0] == "txn":
            result: TxnResult | StoreError = self._txn(command[2], command[3], command[4])
        elif command[0] == "compact":
            result = self._compact(command[2])
        else:  # unreachable for checked commands
            result = InvalidRequest(f"unknown command {command[0]!r}")
        if request_id is not None:
            self._seen[request_id] = result
            while len(self._seen) > self.dedup_limit:
                self._seen.popitem(last=False)
        return result

    def _txn(self, compares: tuple, success: tuple, failure: tuple) -> TxnResult:
        succeeded = all(self._compare(*c) for c in compares)
        ops = success if succeeded else failure
        revision = self.revision + 1
        changed = False
        results = []
        for op in ops:
            if op[0] == "get":
                record = self._data.get(op[1])
                results.append(OpResult(kvs=(_kv(op[1], record),) if record else ()))
            elif op[0] == "put":
                prev = self._put(op[1], op[2], revision)
                changed = True
                results.append(OpResult(prev_kvs=(_kv(op[1], prev),) if prev else ()))
            else:
                deleted = self._delete(op[1], op[2], revision)
                changed = changed or bool(deleted)
                results.append(OpResult(prev_kvs=tuple(deleted)))
        if changed:
            self.revision = revision
            self._trim_history()
        return TxnResult(succeeded, self.revision, tuple(results))

    def _compare(self, key: str, target: str, result: str, value: Any) -> bool:
        record = self._data.get(key)
        if record is None:
            if target == "value":
                return False  # etcd: a value compare on a missing key always fails
            record = (b"", 0, 0, 0)
        return _ORDER[result](record[_FIELD[target]], value)

    def _put(self, key: str, value: bytes, revision: int) -> Record | None:
        prev = self._data.get(key)
        if prev is None:
            record = (value, revision, revision, 1)
            bisect.insort(self._keys, key)
        else:
            record = (value, prev[1], revision, prev[3] + 1)
        self._data[key] = record
        self._history.append((revision, key, record, prev))
        return prev

    def _delete(self, key: str, prefix: bool, revision: int) -> list[KeyValue]:
        if prefix:
            lo = bisect.bisect_left(self._keys, key)
            end = prefix_end(key)
            hi = bisect.bisect_left(self._keys, end) if end else len(self._keys)
            keys = self._keys[lo:hi]
            del self._keys[lo:hi]
        elif key in self._data:
            keys = [key]
            del self._keys[bisect.bisect_left(self._keys, key)]
        else:
            return []
        deleted = []
        for k in keys:
            prev = self._data.pop(k)
            self._history.append((revision, k, None, prev))
            deleted.append(_kv(k, prev))
        return deleted

    def _compact(self, revision: int) -> TxnResult | StoreError:
        if revision > self.revision:
            return FutureRevision(f"compaction revision {revision} is a future revision")
        if revision <= self.compact_revision:
            return Compacted(self.compact_revision, revision)
        self._drop_history_before(revision)
        return TxnResult(True, self.revision)

    def _drop_history_before(self, revision: int) -> None:
        cut = bisect.bisect_left(self._history, revision, key=lambda e: e[0])
        del self._history[:cut]
        self.compact_revision = revision

    def _trim_history(self) -> None:
        # Amortised: trim a quarter at a time, and only at a revision boundary.
        if len(self._history) <= self.history_limit + self.history_limit // 4:
            return
        first_kept = self._history[len(self._history) - self.history_limit][0]
        self._drop_history_before(first_kept)

    # -- reads ----------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        record = self._data.get(key)
        return _kv(key, record) if record else None

    def range(
        self, prefix: str, *, limit: int = 0, continue_key: str | None = None, revision: int = 0
    ) -> RangeResult:
        end = prefix_end(prefix)
        start = prefix if continue_key is None or continue_key < prefix else continue_key
        if revision and revision != self.revision:
            items = self._items_at(revision, start, end)
        else:
            lo = bisect.bisect_left(self._keys, start)
            hi = bisect.bisect_left(self._keys, end) if end else len(self._keys)
            items = [(k, self._data[k]) for k in self._keys[lo:hi]]
        count = len(items)
        more = bool(limit) and count > limit
        page = items[:limit] if limit else items
        kvs = [_kv(k, r) for k, r in page]
        return RangeResult(
            kvs, self.revision, more, count, (kvs[-1].key + "\x00") if more else None
        )

    def _items_at(self, revision: int, start: str, end: str) -> list[tuple[str, Record]]:
        if revision > self.revision:
            raise FutureRevision(f"revision {revision} is a future revision")
        if revision < self.compact_revision:
            raise Compacted(self.compact_revision, revision)
        state: dict[str, Record | None] = {}
        lo = bisect.bisect_left(self._keys, start)
        hi = bisect.bisect_left(self._keys, end) if end else len(self._keys)
        for k in self._keys[lo:hi]:
            state[k] = self._data[k]
        cut = bisect.bisect_right(self._history, revision, key=lambda e: e[0])
        for _, key, _after, before in reversed(self._history[cut:]):
            if _in_range(key, start, end):
                state[key] = before
        return sorted((k, r) for k, r in state.items() if r is not None)

    def events_since(self, revision: int, prefix: str) -> Iterator[Event]:
        """Events of revision >= ``revision`` on keys under ``prefix``, oldest first."""
        if revision < self.compact_revision:
            raise Compacted(self.compact_revision, revision)
        end = prefix_end(prefix)
        start = bisect.bisect_left(self._history, revision, key=lambda e: e[0])
        for rev, key, after, before in self._history[start:]:
            if not _in_range(key, prefix, end):
                continue
            prev = _kv(key, before) if before else None
            if after is None:
                yield Event(EventType.DELETE, rev, KeyValue(key, b"", 0, rev, 0), prev)
            else:
                yield Event(EventType.PUT, rev, _kv(key, after), prev)

    def __len__(self) -> int:
        return len(self._data)

    def digest(self) -> str:
        """A hash of the keyspace and revision: equal on replicas that applied the same log."""
        h = hashlib.sha256(str(self.revision).encode())
        for key in self._keys:
            value, create, mod, version = self._data[key]
            h.update(b"%s\0%d\0%d\0%d\0" % (key.encode(), create, mod, version))
            h.update(hashlib.sha256(value).digest())
        return h.hexdigest()
