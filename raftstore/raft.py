"""RaftStore: the Store replicated by Raft (pysyncobj), embedded in the controller process.

Flow, in the order of the code:
  * ``RaftConfig``: who this member is, its peers, data dir, cluster secret, fsync policy, timers.
  * ``_Replica`` is the pysyncobj object. Its only replicated method, ``apply_batch``, decodes
    one log entry (a checked, checksummed batch of commands) and applies it to the pure
    ``KVStateMachine`` under the store lock. Everything set before ``SyncObj.__init__`` (lock,
    notifier) is left out of snapshots; the state machine, set after, is the snapshot.
  * ``_TickThread`` drives pysyncobj (autoTick off) so that the journal can be wrapped with the
    fsync policy before the first tick, and so that a dying tick loop is logged, not silent.
  * ``RaftStore`` is the asyncio side. Writes and linearizable reads queue up during one event
    loop iteration and go out as one log entry (group commit): writes as commands, reads as a
    read barrier that is satisfied once that entry is applied locally. An entry whose outcome is
    unknown (leader change, timeout) is submitted again with the same request ids; the state
    machine answers repeats from its memory of recent ids, so a retry applies at most once.

pysyncobj traps handled here are listed in ../shared/reference/pysyncobj.md: no blocking in
the tick thread, every wait bounded, idempotent retries, journal plus dump, password required.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from raftstore.base import StateMachineStore
from raftstore.commands import Command, pack_batch, unpack_batch
from raftstore.durability import FsyncPolicy, SyncedJournal, check_data_dir
from raftstore.statemachine import DEFAULT_HISTORY_LIMIT, KVStateMachine
from raftstore.store import (
    InvalidRequest,
    Member,
    Status,
    StoreError,
    TxnResult,
    Unavailable,
)

log = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"
DUMP_FILE = "raft.dump"
MIN_SECRET_LENGTH = 16
# One log entry carries at most this much: pysyncobj re-copies a follower's receive backlog on
# every read, so a few very large entries can leave a follower behind for good.
MAX_BATCH_COMMANDS = 128
MAX_BATCH_BYTES = 64 * 1024


class ConfigError(ValueError):
    """A RaftConfig that can't work; the message says which setting and why."""


def split_hostport(value: str, what: str) -> tuple[str, int]:
    """("host", port) from "host:port" (IPv6 hosts in brackets), or ConfigError naming ``what``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class RaftConfig:
    """One member's settings. ``address`` and ``peers`` are "host:port" of Raft peer traffic."""

    address: str
    peers: Sequence[str]
    data_dir: Path
    secret: str = field(repr=False)
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    heartbeat: float = 0.1  # pysyncobj appendEntriesPeriod
    #: A follower stands after a random time in this range without hearing from a leader.
    #: The low end is etcd's 1 s (shorter ones moved leadership under load on 2 cores); the
    #: high end is 1.5 s, not etcd's 2 s: the election after a leader dies ends when the first
    #: follower times out, and the range's top is its worst case.
    election_timeout: tuple[float, float] = (1.0, 1.5)
    request_timeout: float = 10.0
    history_limit: int = DEFAULT_HISTORY_LIMIT
    compaction_min_entries: int = 5000  # journal entries between snapshots (pysyncobj default)
    #: UNSAFE: reads skip the barrier (stale reads from a lagging or cut-off member). Exists so
    #: a chaos run can show its checker catches exactly that bug; never for real clusters.
    unsafe_local_reads: bool = False

    def validate(self) -> None:
        if not self.secret or len(self.secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"a cluster secret of at least {MIN_SECRET_LENGTH} characters is required: "
                "without it any host that reaches the peer port could join or run commands"
            )
        for addr in (self.address, *self.peers):
            split_hostport(addr, "peer address")
        low, high = self.election_timeout
        if not 0 < low < high:
            raise ConfigError("election_timeout must be (low, high) with 0 < low < high")
        if low <= 3 * self.heartbeat:
            raise ConfigError("election_timeout low must exceed 3 heartbeats")


class _Replica(SyncObj):
    """pysyncobj glue. Runs ``apply_batch`` on the tick thread; never blocks there."""

    def __init__(self, config: RaftConfig, lock: threading.Lock, on_applied: Any) -> None:
        # Members set before SyncObj.__init__ are not part of snapshots.
        self._store_lock = lock
        self._on_applied = on_applied
        data_dir = Path(config.data_dir)
        conf = SyncObjConf(
            password=config.secret,
            autoTick=False,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=config.heartbeat,
            raftMinTimeout=config.election_timeout[0],
            raftMaxTimeout=config.election_timeout[1],
            journalFile=str(data_dir / JOURNAL_FILE),
            fullDumpFile=str(data_dir / DUMP_FILE),
            logCompactionMinEntries=config.compaction_min_entries,
            dynamicMembershipChange=True,
            commandsWaitLeader=False,
            connectionRetryTime=0.5,
            connectionTimeout=2.0,
            maxBindRetries=20,
            bindRetryTime=0.25,
        )
        super().__init__(config.address, [p for p in config.peers if p != config.address], conf)
        _keep_next_index_monotonic(self)
        _truncate_only_at_conflicts(self)
        _commit_only_matched_entries(self)
        self.state = KVStateMachine(history_limit=config.history_limit)

    @replicated
    def apply_batch(self, entry: bytes) -> list[TxnResult | StoreError]:
        commands = unpack_batch(entry)
        with self._store_lock:
            state = self.state
            results = [
                c if isinstance(c, StoreError) else state.apply(c) for c in commands
            ]
        self._on_applied()
        return results


#: pysyncobj's handling of one peer message: ``handle(node, message)``.
_Handler = Callable[[Any, Any], None]


def _intercept_messages(replica: SyncObj,
                        intercept: Callable[[Any, Any, _Handler], None]) -> None:
    """Put ``intercept(node, message, handle)`` in front of what handles peer messages now
    (``handle``: pysyncobj's handler, or an interceptor installed before this one)."""
    transport = replica._SyncObj__transport  # type: ignore[attr-defined]
    handle = transport._onMessageReceivedCallback
    transport.setOnMessageReceivedCallback(lambda node, message: intercept(node, message, handle))


def _keep_next_index_monotonic(replica: SyncObj) -> None:
    """Stop a late acknowledgement from pulling a follower's nextIndex back.

    The leader sends entries pipelined and advances nextIndex as it sends. pysyncobj sets
    nextIndex to what each successful acknowledgement says, so an ack for an earlier batch that
    arrives after later batches went out moves it backwards: the leader sends those entries
    again, and the follower deletes and re-appends them. With writes coming from several
    members this turns into a resend storm (3 submitting members: 421 writes/s, p99 398 ms,
    against 2,342 from the leader alone). etcd's raft only ever raises Next on success
    (``Progress.MaybeUpdate``); a follower that really lacks entries answers with a reset,
    which still lowers it.
    """

    def on_message(node: Any, message: Any, handle: _Handler) -> None:
        next_index = replica._SyncObj__raftNextIndex  # type: ignore[attr-defined]
        before = next_index.get(node)
        handle(node, message)
        if (before is not None and isinstance(message, dict)
                and message.get("type") == "next_node_idx" and message.get("success")
                and not message.get("reset")):
            next_index = replica._SyncObj__raftNextIndex  # type: ignore[attr-defined]
            if next_index.get(node, before) < before:
                next_index[node] = before

    _intercept_messages(replica, on_message)


def _truncate_only_at_conflicts(replica: SyncObj) -> None:
    """Make a follower delete log entries only where they conflict with the leader's (Raft).

    pysyncobj's follower deletes everything after ``prevLogIdx`` whenever it holds more
    entries, even when every entry it holds there is the leader's own, and it never deletes
    an entry whose term conflicts with the leader's: it only answers with a reset. Both hurt:

    * Livelock (the member that "never catches up" after partition-leader and pause-leader).
      A deposed leader keeps a few uncommitted entries of its old term. The new leader
      pipelines a burst (prevLogIdx 1155, 1530, 1913, ...); the follower answers the first
      with "conflict, next 1155" and every later one with "beyond my log, next 1156" (its
      unchanged end). The leader applies the replies in order, ends at 1156, sends prevLogIdx
      1155 again, and so on forever: traced for minutes, log end 1155, commit 1152, leader at
      4647, TCP links up, every write through that member timing out.
    * Deleted acknowledged entries (``CRITICAL truncating already-applied log entries`` after
      pause-leader). Any append with a lower ``prevLogIdx`` than the follower's end (a
      heartbeat built from a nextIndex that a late reset pulled back, or a message that
      overtook others across an old and a new connection after SIGCONT) erased entries the
      follower had acknowledged, and had applied: Raft forbids it, a majority may then lack
      a committed entry.

    Before pysyncobj sees an ``append_entries`` this trims it to what Raft would do:

    * ``prevLogIdx`` conflicts (held, other term): delete from there on (never at or below
      the commit index). pysyncobj then answers "next = prevLogIdx" as before, and every
      later answer of the burst agrees with it (the end moved down too), so the leader walks
      back one index per round trip instead of bouncing.
    * Entries the follower already holds with the same term are dropped from the message and
      ``prevLogIdx`` moved past them, so pysyncobj deletes only from a real conflict.
    * A message that brings nothing new is turned into a heartbeat at the highest index known
      to match this leader's log: the entries of the message, what this term's leader already
      had acknowledged, or what is committed. Only an unconfirmed tail above all of these is
      still dropped (never acknowledged in this term, never applied).

    Replies keep pysyncobj's meaning: success with the next index after a matched prefix,
    or a reset. Messages split in chunks (``transmission``, entries over 64 KiB) pass as they
    are, as do messages of older terms (pysyncobj ignores them).
    """
    confirmed = [-1, 0]  # [term, index]: this term's leader matched our log up to index

    def on_message(node: Any, message: Any, handle: _Handler) -> None:
        if (isinstance(message, dict) and message.get("type") == "append_entries"
                and message.get("prevLogIdx") is not None and "transmission" not in message
                and message.get("term", -1) >= replica.raftCurrentTerm):
            message = _trim_append_entries(replica, message, confirmed)
        handle(node, message)

    _intercept_messages(replica, on_message)


def _commit_only_matched_entries(replica: SyncObj) -> None:
    """Keep a follower from committing entries the leader has not matched (Raft's
    ``commitIndex = min(leaderCommit, index of last new entry)``).

    pysyncobj raises a follower's commit index to ``min(leaderCommit, own log end)`` after
    every ``append_entries`` of the current term, including the snapshot-transfer messages,
    which carry no ``prevLogIdx`` and so match nothing. A deposed leader's first message from
    its successor is often such a message (its log fell behind the successor's compaction
    point while it was paused or cut off): it then committed and applied its own tail of the
    old term that the cluster never committed. Its pending read barriers were entries of that
    tail, so they "succeeded" and the API answered reads from the deposed leader's stale state
    (caught by ``corral chaos run pause-leader --rebind 0.05`` after kill-leader: reads
    returning values a majority had overwritten seconds before; no write lost, since the
    snapshot then replaced that state). A snapshot message now never raises the commit
    index; the first append after it, whose ``prevLogIdx`` matches the snapshot, does.
    """

    def on_message(node: Any, message: Any, handle: _Handler) -> None:
        if (isinstance(message, dict) and message.get("type") == "append_entries"
                and "prevLogIdx" not in message and "commit_index" in message):
            message = {**message, "commit_index": min(message["commit_index"],
                                                       replica.raftCommitIndex)}
        handle(node, message)

    _intercept_messages(replica, on_message)


def _trim_append_entries(replica: SyncObj, message: dict[str, Any],
                         confirmed: list[int]) -> dict[str, Any]:
    journal = replica._SyncObj__raftLog  # type: ignore[attr-defined]
    first, last = journal[0][1], journal[-1][1]
    term = message["term"]
    if confirmed[0] != term:
        confirmed[:] = [term, 0]
    commit = replica.raftCommitIndex
    prev = message["prevLogIdx"]
    if prev < first or prev > last:
        return message  # pysyncobj answers with a reset to our end
    if journal[prev - first][2] != message["prevLogTerm"]:
        if prev <= commit:
            log.error("leader's entry %d conflicts with a committed one; not deleting", prev)
            return message
        _delete_entries_from(replica, prev)
        confirmed[1] = min(confirmed[1], prev - 1)
        return message
    entries = message.get("entries") or []
    held = 0
    for entry in entries:
        idx = entry[1]
        if idx > last or journal[idx - first][2] != entry[2]:
            break
        held += 1
    if held < len(entries):
        # entries[held] is new (after our end) or conflicts: pysyncobj deletes from there on
        # and appends the rest; our log then matches the leader's up to the last entry.
        confirmed[1] = max(confirmed[1], entries[-1][1])
        if held == 0:
            return message
        start = prev + held
        return {**message, "prevLogIdx": start, "prevLogTerm": journal[start - first][2],
                "entries": entries[held:]}
    keep = max(prev + held, min(max(confirmed[1], commit), last))
    confirmed[1] = max(confirmed[1], keep)
    if keep == prev and keep == last:
        return message
    return {**message, "prevLogIdx": keep, "prevLogTerm": journal[keep - first][2],
            "entries": []}


def _delete_entries_from(replica: SyncObj, index: int) -> None:
    """Delete log entries from ``index`` on, undoing the membership changes among them."""
    entries = replica._SyncObj__getEntries(index)  # type: ignore[attr-defined]
    if replica.conf.dynamicMembershipChange:
        for entry in reversed(entries):
            change = replica._SyncObj__parseChangeClusterRequest(entry[0])  # type: ignore[attr-defined]
            if change is not None:
                replica._SyncObj__doChangeCluster(change, reverse=True)  # type: ignore[attr-defined]
    replica._SyncObj__deleteEntriesFrom(index)  # type: ignore[attr-defined]


#: Every link carries something this often, well inside pysyncobj's connectionTimeout (2 s).
KEEPALIVE_SECONDS = 0.5
#: A message type pysyncobj's dispatcher ignores (it acts on the types it knows only).
KEEPALIVE = {"type": "corral_keepalive"}


class _LinkKeepAlive:
    """Keep the links between followers alive.

    pysyncobj drops a connection when it sends on it after ``connectionTimeout`` without
    reading anything. Between two followers nothing flows while a leader lives, so the first
    message after the leader dies (a candidate's ``request_vote``) finds the link idle, drops
    it, and is lost: the other follower times out too, stands for the same term, and the
    election takes a second round (1-2 s more). Measured with bench/failover.py: every kill
    cost two terms. A small message each way every ``KEEPALIVE_SECONDS`` keeps each link read,
    so the timeout still catches dead or partitioned peers and the vote request arrives.

    Only links that finished pysyncobj's handshake get one (``connectedNodes``, as for
    append_entries): a new outgoing link counts as connected at the TCP level before the
    peers exchanged their keys and addresses, and a message sent then reaches the other side
    unwrapped; it fails to decode there and the link is dropped again.
    """

    def __init__(self, replica: SyncObj) -> None:
        self._transport = replica._SyncObj__transport  # type: ignore[attr-defined]
        self._nodes = replica._SyncObj__connectedNodes  # type: ignore[attr-defined]
        self._next = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + KEEPALIVE_SECONDS
        for node in list(self._nodes):
            self._transport.send(node, KEEPALIVE)


def _wrap_journal(replica: _Replica, config: RaftConfig) -> SyncedJournal:
    """Put the fsync policy around the journal pysyncobj opened (before the first tick)."""
    attr = "_SyncObj__raftLog"
    inner = getattr(replica, attr, None)
    if inner is None:
        raise RuntimeError("this pysyncobj version keeps its journal elsewhere; pin >=0.3.16")
    data_dir = Path(config.data_dir)
    journal = SyncedJournal(
        inner,
        journal_path=data_dir / JOURNAL_FILE,
        dump_path=data_dir / DUMP_FILE,
        policy=config.fsync,
    )
    setattr(replica, attr, journal)
    notifier = getattr(replica, "_SyncObj__pipeNotifier", None)
    if notifier is not None:
        # A lone member commits an entry on the tick after it is appended; without a wake-up
        # that tick would first sleep in the poller for a whole period.
        def wake_lone_member() -> None:
            if not replica.otherNodes:
                notifier.notify()

        journal.on_append = wake_lone_member
    return journal


class _TickThread(threading.Thread):
    """Drives pysyncobj. Ticks again at once while committed or, on a lone member, appended
    entries wait to be applied, instead of sleeping in the poller until the next event."""

    def __init__(self, replica: _Replica, journal: SyncedJournal, period: float,
                 on_leader: Callable[[], None]) -> None:
        super().__init__(name=f"raft-tick-{replica.selfNode.address}", daemon=True)
        self._replica = replica
        self._journal = journal
        self._period = period
        self._on_leader = on_leader
        self._leader: Any = None
        self._keepalive = _LinkKeepAlive(replica)
        self._stop_event = threading.Event()

    def _work_pending(self) -> bool:
        replica = self._replica
        commit = replica.raftCommitIndex
        if commit > replica.raftLastApplied:
            return True
        return not replica.otherNodes and len(self._journal) > 0 and self._journal[-1][1] > commit

    def run(self) -> None:
        wait = self._period
        while not self._stop_event.is_set():
            try:
                self._replica.doTick(wait)
                self._keepalive.tick()
                leader = self._replica._getLeader()
                if leader is not self._leader:
                    self._leader = leader
                    if leader is not None:
                        self._on_leader()
                wait = 0.0 if self._work_pending() else self._period
            except Exception:
                log.exception("raft tick failed; continuing")
                time.sleep(self._period)
        self._replica.destroy()

    def stop(self) -> None:
        self._stop_event.set()


def _note_tick_fork() -> None:
    if isinstance(threading.current_thread(), _TickThread):
        _forking_pid[0] = os.getpid()
        _forking_tid[0] = threading.get_native_id()


def _snapshot_child_dies_with_member() -> None:
    """In a child forked by a tick thread (pysyncobj's snapshot writer): die with the member.

    A snapshot child orphaned by a killed member would otherwise finish later and replace
    raft.dump under the restarted member, whose loader then drops the journal's tail. The
    signal follows the forking thread, so closing the store also stops a snapshot in flight:
    raft.dump stays as it was. Forks from other threads of the process are left alone.
    """
    if not isinstance(threading.current_thread(), _TickThread):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    # The signal follows the forking *thread*: if it ended (the store closed) before prctl
    # took effect, no signal will ever come, so check for it now that prctl is in place.
    if os.getppid() != _forking_pid[0] or not os.path.exists(
            f"/proc/{_forking_pid[0]}/task/{_forking_tid[0]}"):
        os._exit(1)


_PR_SET_PDEATHSIG = 1
_forking_pid = [0]
_forking_tid = [0]
if sys.platform.startswith("linux"):
    os.register_at_fork(before=_note_tick_fork, after_in_child=_snapshot_child_dies_with_member)


@dataclass
class _Batch:
    """What one loop iteration collected: commands with their futures, and waiting readers."""

    commands: list[Command] = field(default_factory=list)
    futures: list[asyncio.Future[TxnResult | StoreError]] = field(default_factory=list)
    readers: list[asyncio.Future[None]] = field(default_factory=list)
    size: int = 0  # approximate encoded bytes


def _command_size(command: Command) -> int:
    if command[0] != "txn":
        return 16
    return 64 + sum(len(op[1]) + (len(op[2]) if op[0] == "put" else 0) for op in command[3])


class RaftStore(StateMachineStore):
    """The embedded, replicated Store. Create with ``await RaftStore.open(config)``."""

    def __init__(self, config: RaftConfig, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.config = config
        self._loop = loop
        self._notify_pending = threading.Event()
        self._replica = _Replica(config, self._lock, self._on_applied)
        journal = _wrap_journal(self._replica, config)
        #: Set (and replaced) on the loop whenever this member learns of a new leader: writes
        #: waiting out an election go at once instead of at their next back-off step.
        self._leader_known = asyncio.Event()
        self._tick = _TickThread(self._replica, journal, period=min(0.05, config.heartbeat / 2),
                                 on_leader=lambda: loop.call_soon_threadsafe(self._new_leader))
        self._batch = _Batch()
        self._flush_scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def open(cls, config: RaftConfig) -> RaftStore:
        """Check the data dir, start the member and return once its port is bound."""
        config.validate()
        if config.unsafe_local_reads:
            log.warning("UNSAFE: reads skip the Raft barrier (--unsafe-local-reads): this "
                        "member may serve stale data")
        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        check_data_dir(data_dir / JOURNAL_FILE, data_dir / DUMP_FILE)
        store = cls(config, asyncio.get_running_loop())
        store._tick.start()
        return store

    # -- state-machine access ---------------------------------------------------------------

    @property
    def _sm(self) -> KVStateMachine:
        return self._replica.state

    def _on_applied(self) -> None:
        # Tick thread: coalesce wake-ups so a burst of entries costs one loop callback.
        if not self._notify_pending.is_set():
            self._notify_pending.set()
            self._loop.call_soon_threadsafe(self._wake_watchers)

    def _wake_watchers(self) -> None:
        self._notify_pending.clear()
        self._changed()

    def _new_leader(self) -> None:
        self._leader_known.set()
        self._leader_known = asyncio.Event()

    async def _back_off(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a leader becomes known meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._leader_known.wait(), seconds)

    # -- group commit -----------------------------------------------------------------------

    def _enqueue(self) -> _Batch:
        if self._closed:
            raise Unavailable("store is closed")
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return self._batch

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, _Batch()
        if not batch.commands and not batch.readers:
            return
        task = self._loop.create_task(self._commit(batch), name="raftstore-commit")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _commit(self, batch: _Batch) -> None:
        """Get one entry applied locally, resubmitting it until it is or time runs out."""
        entry = pack_batch(batch.commands)
        deadline = self._loop.time() + self.config.request_timeout
        delay = 0.02
        while True:
            remaining = deadline - self._loop.time()
            if remaining <= 0 or self._closed:
                error = Unavailable("no quorum answered in time; the write may or may not apply")
                for fut in [*batch.futures, *batch.readers]:
                    if not fut.done():
                        fut.set_exception(error)
                return
            done: asyncio.Future[tuple[Any, int]] = self._loop.create_future()

            def callback(result: Any, error: int, done: asyncio.Future = done) -> None:
                self._loop.call_soon_threadsafe(_settle, done, (result, error))

            self._replica.apply_batch(entry, callback=callback)
            try:
                results, error = await asyncio.wait_for(done, min(remaining, 2.0))
            except TimeoutError:
                continue  # outcome unknown: resubmit, the request ids make it idempotent
            if error == FAIL_REASON.SUCCESS:
                break
            log.debug("raft entry not applied (reason %s); retrying", error)
            await self._back_off(min(delay, max(0.0, deadline - self._loop.time())))
            delay = min(delay * 2, 0.25)
        if len(results) != len(batch.commands):
            results = [InvalidRequest("log entry was damaged")] * len(batch.commands)
        for fut, result in zip(batch.futures, results):
            if not fut.done():
                fut.set_result(result)
        for fut in batch.readers:
            if not fut.done():
                fut.set_result(None)

    async def _submit(self, command: Command) -> TxnResult | StoreError:
        batch = self._enqueue()
        fut: asyncio.Future[TxnResult | StoreError] = self._loop.create_future()
        batch.commands.append(command)
        batch.futures.append(fut)
        batch.size += _command_size(command)
        if len(batch.commands) >= MAX_BATCH_COMMANDS or batch.size >= MAX_BATCH_BYTES:
            self._flush()  # big entries make followers fall behind; ship this one now
        return await fut

    async def _barrier(self) -> None:
        if self.config.unsafe_local_reads:
            return
        batch = self._enqueue()
        fut: asyncio.Future[None] = self._loop.create_future()
        batch.readers.append(fut)
        await fut

    # -- cluster ----------------------------------------------------------------------------

    async def status(self) -> Status:
        replica = self._replica
        leader = replica._getLeader()
        leader_addr = leader.address if leader is not None else None
        nodes = sorted({replica.selfNode.address, *(n.address for n in replica.otherNodes)})
        with self._lock:
            sm = self._sm
            revision, compact = sm.revision, sm.compact_revision
        return Status(
            members=tuple(Member(a, a, is_leader=a == leader_addr) for a in nodes),
            leader=leader_addr,
            term=replica.raftCurrentTerm,
            applied_index=replica.raftLastApplied,
            revision=revision,
            compact_revision=compact,
        )

    @property
    def is_leader(self) -> bool:
        return bool(self._replica._isLeader())

    async def _membership(self, change: Any, name: str) -> None:
        done: asyncio.Future[tuple[Any, int]] = self._loop.create_future()

        def callback(result: Any, error: int) -> None:
            self._loop.call_soon_threadsafe(_settle, done, (result, error))

        change(name, callback=callback)
        try:
            _, error = await asyncio.wait_for(done, self.config.request_timeout)
        except TimeoutError:
            raise Unavailable(f"membership change for {name} timed out") from None
        if error != FAIL_REASON.SUCCESS:
            raise StoreError(f"membership change for {name} refused (pysyncobj reason {error})")

    async def add_member(self, name: str, peer_url: str) -> None:
        """Add the member listening at ``peer_url`` ("host:port"); one change at a time."""
        await self._membership(self._replica.addNodeToCluster, peer_url)

    async def remove_member(self, name: str) -> None:
        await self._membership(self._replica.removeNodeFromCluster, name)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._tick.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._tick.join, 5.0)


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
