"""What makes an acknowledged write survive: the fsync policy and the start-up check.

pysyncobj keeps its Raft log in an mmap'ed journal that it never msyncs, stores currentTerm and
votedFor with a rename but no fsync, and loads a damaged journal or dump by logging and carrying
on with less data. This module closes those gaps from outside:

``SyncedJournal`` wraps the journal pysyncobj created and applies the ``FsyncPolicy``:
  * ALWAYS:   every appended entry, and every term/vote change, is on disk (msync/fsync)
              before pysyncobj goes on to send the message that depends on it (an
              AppendEntries ack, a vote). An acknowledged write is then on the disks of a
              majority and survives the power failing everywhere at once. This is etcd's
              behaviour and the default.
  * INTERVAL: a background flush every ``interval`` seconds. Acknowledged writes survive any
              number of processes being killed (the page cache keeps them) and power loss on a
              minority; power loss on a majority at once may lose the last interval.
  * NONE:     the kernel writes back when it likes (about 30 s). For throwaway test clusters.
Before log compaction drops journal entries, the new dump is fsynced, so a snapshot never
replaces entries that are not yet durable elsewhere.

The journal is synced with ``fdatasync`` on a descriptor of our own, not with pysyncobj's
``mmap.flush``: CPython's msync holds the GIL for the whole disk write, stalling the API's
event loop on every appended entry (a scheduler benchmark found 17.5% of the leader's samples
there), while ``os.fdatasync`` releases it. Syncing the file syncs its pages dirtied through
the shared mapping too (fsync is per inode; pysyncobj never replaces the journal file).

``check_data_dir`` reads the journal, its meta file and the dump before pysyncobj does and raises
``CorruptDataError`` naming the file, the damage and the way out, instead of letting pysyncobj
start with silently missing state.
"""

from __future__ import annotations

import enum
import gzip
import logging
import os
import pickle
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pysyncobj import journal as pjournal

from raftstore.commands import unpack_batch

log = logging.getLogger(__name__)


class FsyncPolicy(str, enum.Enum):
    ALWAYS = "always"
    INTERVAL = "interval"
    NONE = "none"


class CorruptDataError(Exception):
    """A data file can't be trusted; the member must not start on it."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"{path}: {problem}. This member's data is damaged and it will not start on it. "
            f"If the other members are healthy, move {path.parent} aside and start this member "
            f"again with an empty data directory: it rejoins and receives a snapshot from the "
            f"leader. Otherwise restore {path.parent} from a backup."
        )


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SyncedJournal(pjournal.Journal):
    """pysyncobj's FileJournal plus the fsync policy; everything else is delegated."""

    def __init__(
        self,
        inner: pjournal.Journal,
        *,
        journal_path: Path,
        dump_path: Path,
        policy: FsyncPolicy,
        interval: float = 0.1,
    ) -> None:
        self._inner = inner
        self._journal_path = journal_path
        self._meta_path = Path(str(journal_path) + ".meta")
        self._dump_path = dump_path
        self._policy = policy
        self._dirty = False
        self._fd = os.open(journal_path, os.O_RDONLY)  # for fdatasync: see the module doc
        self.on_append: Callable[[], None] | None = None  # called after each appended entry
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if policy is FsyncPolicy.INTERVAL:
            self._flusher = threading.Thread(
                target=self._flush_loop, args=(interval,), name="raftstore-fsync", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if self._dirty:
                self._dirty = False
                self._sync_journal()

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._inner.add(command, idx, term)
        if self._policy is FsyncPolicy.ALWAYS:
            self._sync_journal()
        else:
            self._dirty = True
        if self.on_append is not None:
            self.on_append()

    def clear(self) -> None:
        self._sync_dump()
        self._inner.clear()

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802 (pysyncobj's names)
        self._inner.deleteEntriesFrom(entryFrom)
        self._flush_now()

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802
        self._sync_dump()
        self._inner.deleteEntriesTo(entryTo)
        self._flush_now()

    def _sync_dump(self) -> None:
        if self._policy is not FsyncPolicy.NONE:
            _fsync_path(self._dump_path)
            _fsync_path(self._dump_path.parent)

    def _flush_now(self) -> None:
        if self._policy is not FsyncPolicy.NONE:
            self._sync_journal()

    def _sync_journal(self) -> None:
        os.fdatasync(self._fd)

    def __getitem__(self, item: Any) -> Any:
        return self._inner[item]

    def __len__(self) -> int:
        return len(self._inner)

    def _destroy(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self._inner._destroy()  # flushes
        os.close(self._fd)

    def flush(self) -> None:
        self._sync_journal()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802,N803
        self._inner.setRaftCommitIndex(raftCommitIndex)

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return self._inner.getRaftCommitIndex()

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802,N803
        self._inner.setCurrentTerm(term, votedForNodeId)
        if self._policy is FsyncPolicy.ALWAYS:
            _fsync_path(self._meta_path)
            _fsync_path(self._meta_path.parent)

    def getCurrentTerm(self) -> int:  # noqa: N802
        return self._inner.getCurrentTerm()

    def getVotedForNodeId(self) -> Any:  # noqa: N802
        return self._inner.getVotedForNodeId()

    def onOneSecondTimer(self) -> None:  # noqa: N802
        self._inner.onOneSecondTimer()


# -- start-up check --------------------------------------------------------------------------

_REGULAR = 0  # pysyncobj _COMMAND_TYPE.REGULAR: entries carrying our replicated calls


def read_journal(path: Path) -> list[tuple[bytes, int, int]]:
    """Walk pysyncobj's journal format: its (command, index, term) entries, or CorruptDataError."""
    if not path.exists():
        return []
    data = path.read_bytes()
    header = pjournal.FIRST_RECORD_OFFSET
    if len(data) < header:
        raise CorruptDataError(path, f"file is {len(data)} bytes, shorter than its header")
    if not data.startswith(pjournal.APP_NAME):
        raise CorruptDataError(path, "not a pysyncobj journal (bad header)")
    (fmt,) = struct.unpack_from("<I", data, pjournal.NAME_SIZE + pjournal.VERSION_SIZE)
    if fmt != pjournal.JOURNAL_FORMAT_VERSION:
        raise CorruptDataError(path, f"unknown journal format version {fmt}")
    (end,) = struct.unpack_from("<I", data, pjournal.LAST_RECORD_OFFSET_OFFSET)
    if end < header or end > len(data):
        raise CorruptDataError(path, f"end offset {end} lies outside the file ({len(data)} bytes)")
    entries: list[tuple[bytes, int, int]] = []
    offset, prev_idx, prev_term = header, None, 0
    while offset < end:
        if offset + 4 > end:
            raise CorruptDataError(path, f"record at offset {offset} is truncated")
        (size,) = struct.unpack_from("<I", data, offset)
        if size < 16 or offset + 8 + size > end:
            raise CorruptDataError(path, f"record at offset {offset} is truncated or garbled")
        (trailer,) = struct.unpack_from("<I", data, offset + 4 + size)
        if trailer != size:
            raise CorruptDataError(path, f"record at offset {offset} has mismatched length marks")
        idx, term = struct.unpack_from("<QQ", data, offset + 4)
        if prev_idx is not None and idx != prev_idx + 1:
            raise CorruptDataError(path, f"entry index {idx} follows {prev_idx}")
        if term < prev_term:
            raise CorruptDataError(path, f"entry {idx} has term {term} below {prev_term}")
        command = data[offset + 20 : offset + 4 + size]
        _check_entry(path, idx, command)
        entries.append((command, idx, term))
        prev_idx, prev_term = idx, term
        offset += size + 8
    return entries


def _check_entry(path: Path, idx: int, command: bytes) -> None:
    if not command:
        raise CorruptDataError(path, f"entry {idx} is empty")
    if command[0] != _REGULAR:
        return  # no-op, membership and version entries: pysyncobj's own, no payload of ours
    try:
        call = pickle.loads(command[1:])
        _func_id, (entry,) = call
    except Exception:
        raise CorruptDataError(path, f"entry {idx} does not decode") from None
    if not isinstance(entry, bytes) or any(
        isinstance(c, Exception) for c in unpack_batch(entry)
    ):
        raise CorruptDataError(path, f"entry {idx} fails its checksum or does not decode")


def check_meta(path: Path) -> None:
    if not path.exists():
        return
    try:
        meta = pickle.loads(path.read_bytes())
    except Exception:
        raise CorruptDataError(path, "Raft term/vote file does not decode") from None
    if not isinstance(meta, dict):
        raise CorruptDataError(path, "Raft term/vote file has the wrong shape")


def read_dump_anchor(path: Path) -> tuple[tuple, tuple] | None:
    """The two log entries a snapshot ends with, verifying its gzip CRC on the way."""
    if not path.exists():
        return None
    try:
        with gzip.open(path, "rb") as f:
            _state, last, prev, _cluster = pickle.load(f)
            while f.read(1 << 20):  # the CRC is checked at the end of the stream
                pass
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise CorruptDataError(path, f"snapshot is truncated or corrupt ({exc})") from None
    return tuple(prev), tuple(last)


def _rewrite_journal(path: Path, entries: list[tuple[bytes, int, int]]) -> None:
    """Replace the journal with ``entries`` atomically, using pysyncobj's own writer."""
    tmp = path.with_name(path.name + ".rewrite")
    for stale in (tmp, Path(str(tmp) + ".meta")):
        stale.unlink(missing_ok=True)
    journal = pjournal.FileJournal(str(tmp))
    for entry in entries:
        journal.add(*entry)
    journal._destroy()  # msyncs and closes
    Path(str(tmp) + ".meta").unlink(missing_ok=True)
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_path(path.parent)


def check_data_dir(journal_path: Path, dump_path: Path) -> None:
    """Refuse damaged files; then line the journal up with the snapshot.

    pysyncobj writes a new snapshot first and trims the journal afterwards. Killed in
    between, it restarts with a snapshot that ends in the middle of an untrimmed journal,
    and its loader then discards the whole journal, entries after the snapshot included:
    acknowledged writes lost when a majority dies in that window. We do the trim it missed.
    """
    entries = read_journal(journal_path)
    check_meta(Path(str(journal_path) + ".meta"))
    anchor = read_dump_anchor(dump_path)
    if anchor is None or len(entries) < 2:
        return
    prev, last = anchor
    if (entries[0], entries[1]) == (prev, last):
        return
    for i in range(len(entries) - 1):
        if entries[i] == prev and entries[i + 1] == last:
            log.warning("%s: trimming %d entries already in %s", journal_path, i, dump_path)
            _rewrite_journal(journal_path, entries[i:])
            return
