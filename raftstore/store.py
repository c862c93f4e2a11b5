"""The Store interface: etcd's key-value semantics, which everything above relies on.

Keys are strings (Kubernetes registry paths), values are bytes. Every committed write
transaction bumps one global revision; each key carries create_revision, mod_revision and
version exactly as etcd defines them. Reads are linearizable unless ``serializable=True``.
Watches stream PUT/DELETE events in revision order from a start revision, interleaved with
PROGRESS (bookmark) events; asking for history that was compacted raises ``Compacted``.

Backends: ``MemoryStore`` (in-process fake), ``RaftStore`` (embedded, pysyncobj) and
``EtcdStore`` (external etcd). One conformance suite (tests/conformance) holds them to the
same behaviour.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field


class StoreError(Exception):
    """Base class of every error a Store raises."""


class Compacted(StoreError):
    """The requested revision is older than the retained history (the API answers 410)."""

    def __init__(self, compact_revision: int, requested: int) -> None:
        super().__init__(
            f"revision {requested} has been compacted (oldest available: {compact_revision})"
        )
        self.compact_revision = compact_revision
        self.requested = requested


class FutureRevision(StoreError):
    """A read asked for a revision the store has not reached yet."""


class Unavailable(StoreError):
    """No quorum or no leader answered in time; a write's outcome is unknown.

    Backends retry what they can prove idempotent before raising this (RaftStore resubmits with
    request ids the state machine deduplicates). After it, the caller does not know whether the
    write happened: retry with a compare on mod_revision, and treat a failed ``Compare.absent``
    create as "look again", as Kubernetes' registry does.
    """


class InvalidRequest(StoreError):
    """A request that can never succeed (bad key, bad compare); nothing was written."""


class CompareTarget(str, enum.Enum):
    MOD = "mod_revision"
    CREATE = "create_revision"
    VERSION = "version"
    VALUE = "value"


class CompareResult(str, enum.Enum):
    EQUAL = "=="
    NOT_EQUAL = "!="
    LESS = "<"
    GREATER = ">"


@dataclass(frozen=True, slots=True)
class Compare:
    """One guard of a transaction. A missing key has revisions and version 0."""

    key: str
    target: CompareTarget
    result: CompareResult
    value: int | bytes

    @classmethod
    def mod_revision(cls, key: str, revision: int) -> Compare:
        """The key was last changed at ``revision`` (Kubernetes' update/delete precondition)."""
        return cls(key, CompareTarget.MOD, CompareResult.EQUAL, revision)

    @classmethod
    def absent(cls, key: str) -> Compare:
        """The key does not exist (Kubernetes' create precondition)."""
        return cls(key, CompareTarget.CREATE, CompareResult.EQUAL, 0)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key``, or every key starting with it when ``prefix`` is set."""

    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    key: str


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


class EventType(str, enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"
    PROGRESS = "PROGRESS"


@dataclass(frozen=True, slots=True)
class Event:
    """A change, or a progress notification saying the stream has reached ``revision``.

    For DELETE, ``kv`` holds the key with ``mod_revision`` = the deletion revision and empty
    value, and ``prev_kv`` the value it had. For PROGRESS, ``kv`` is None.
    """

    type: EventType
    revision: int
    kv: KeyValue | None = None
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class OpResult:
    """Result of one op inside a transaction.

    Get: ``kvs`` holds the key (or nothing). Put: ``prev_kvs`` the previous value if any.
    Delete: ``prev_kvs`` what was deleted (``deleted`` is its length).
    """

    kvs: tuple[KeyValue, ...] = ()
    prev_kvs: tuple[KeyValue, ...] = ()

    @property
    def deleted(self) -> int:
        return len(self.prev_kvs)


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    results: tuple[OpResult, ...] = ()


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int
    more: bool = False
    count: int = 0
    continue_key: str | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    peer_url: str
    client_urls: tuple[str, ...] = ()
    is_leader: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    members: tuple[Member, ...]
    leader: str | None
    term: int
    applied_index: int
    revision: int
    compact_revision: int


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (etcd's range_end).

    Keys order by code point, which is also their UTF-8 byte order, so the result is the same
    bound etcd computes on bytes. "" means "no upper bound".
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return ""


class Store(abc.ABC):
    """etcd-like, revisioned, watchable key-value store. All methods are coroutines."""

    @abc.abstractmethod
    async def get(self, key: str, *, serializable: bool = False) -> tuple[KeyValue | None, int]:
        """The key (or None) and the store revision it was read at."""

    @abc.abstractmethod
    async def range(
        self,
        prefix: str,
        *,
        limit: int = 0,
        continue_key: str | None = None,
        revision: int = 0,
        serializable: bool = False,
    ) -> RangeResult:
        """Keys starting with ``prefix`` in key order, at most ``limit`` (0: all).

        ``continue_key`` is the inclusive key to start from: pass the previous page's
        ``continue_key`` (its last key + "\\x00") to resume;
        ``revision`` reads the state as of that revision (0: current). ``count`` is the number
        of keys in the whole range, not only this page.
        """

    @abc.abstractmethod
    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """If every compare holds run ``success`` else ``failure``, as one revision."""

    async def put(self, key: str, value: bytes) -> int:
        """Set ``key``; the new revision."""
        return (await self.txn((), (Put(key, value),))).revision

    async def delete(self, key: str, *, prefix: bool = False) -> tuple[int, int]:
        """Delete ``key`` (or the prefix); (revision, number deleted)."""
        result = await self.txn((), (Delete(key, prefix),))
        return result.revision, result.results[0].deleted

    @abc.abstractmethod
    def watch(
        self, prefix: str, *, start_revision: int = 0, progress_interval: float = 5.0
    ) -> AsyncGenerator[Event, None]:
        """Events on keys under ``prefix`` from ``start_revision`` (0: from now on).

        Raises ``Compacted`` (on the first iteration) if ``start_revision`` is older than the
        retained history. PROGRESS events carry the revision the stream has reached.
        """

    @abc.abstractmethod
    async def compact(self, revision: int) -> None:
        """Drop history before ``revision``."""

    @abc.abstractmethod
    async def status(self) -> Status: ...

    async def add_member(self, name: str, peer_url: str) -> None:
        raise StoreError(f"{type(self).__name__} does not support membership changes")

    async def remove_member(self, name: str) -> None:
        raise StoreError(f"{type(self).__name__} does not support membership changes")

    async def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
