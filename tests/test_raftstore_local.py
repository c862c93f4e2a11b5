"""RaftStore in this process: persistence across restarts, refusing damaged data, secrets,
and keeping malformed log entries away from the state machine."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from raftstore.commands import pack_batch, unpack_batch
from raftstore.durability import CorruptDataError
from raftstore.localprocess import free_ports
from raftstore.raft import (
    DUMP_FILE,
    JOURNAL_FILE,
    ConfigError,
    RaftConfig,
    RaftStore,
    _keep_next_index_monotonic,
)
from raftstore.store import InvalidRequest

SECRET = "test-secret-0123456789"


def config(data_dir: Path, *, address: str | None = None, peers: list[str] | None = None,
           secret: str = SECRET, **kw: object) -> RaftConfig:
    address = address or f"127.0.0.1:{free_ports(1)[0]}"
    return RaftConfig(address, peers or [], data_dir, secret=secret, **kw)  # type: ignore[arg-type]


async def wait_leader(*stores: RaftStore, timeout: float = 10.0) -> RaftStore:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for s in stores:
            if s.is_leader:
                return s
        await asyncio.sleep(0.02)
    raise AssertionError("no leader elected")


async def _snapshot_written(data_dir: Path, timeout: float = 15.0) -> None:
    """Wait for a snapshot on disk: a child process writes it, and closing the member
    abandons one still being written (the journal keeps every entry meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (data_dir / DUMP_FILE).exists() and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def test_restart_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    cfg = config(tmp_path, compaction_min_entries=50)
    store = await RaftStore.open(cfg)
    await wait_leader(store)
    revisions = [await store.put(f"k/{i}", b"v%d" % i) for i in range(200)]
    await store.delete("k/3")
    before = store.digest()
    await _snapshot_written(tmp_path)
    await store.close()
    assert (tmp_path / DUMP_FILE).exists(), "200 entries should have produced a snapshot"

    again = await RaftStore.open(cfg)
    try:
        await wait_leader(again)
        kv, _ = await again.get("k/199")  # a linearizable read: the log is replayed by then
        assert again.digest() == before
        assert kv is not None and kv.value == b"v199" and kv.mod_revision == revisions[-1]
        assert (await again.get("k/3"))[0] is None
    finally:
        await again.close()


async def _filled_member(tmp_path: Path, *, writes: int = 20, snapshot: bool = False,
                         **kw: object) -> RaftConfig:
    """A closed member with ``writes`` entries; with ``snapshot``, once its snapshot (written
    by a child process after enough entries) is on disk: close abandons one in progress."""
    cfg = config(tmp_path, **kw)
    store = await RaftStore.open(cfg)
    await wait_leader(store)
    for i in range(writes):
        await store.put(f"k/{i}", b"x" * 64)
    if snapshot:
        await _snapshot_written(tmp_path)
    await store.close()
    return cfg


def _flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def _journal_end(path: Path) -> int:
    import struct

    from pysyncobj import journal as pj

    return struct.unpack_from("<I", path.read_bytes(), pj.LAST_RECORD_OFFSET_OFFSET)[0]


@pytest.mark.parametrize("damage", ["flip-payload", "truncate", "garbage-header"])
async def test_damaged_journal_is_refused_with_the_file_named(tmp_path: Path, damage: str) -> None:
    cfg = await _filled_member(tmp_path)
    journal = tmp_path / JOURNAL_FILE
    end = _journal_end(journal)
    if damage == "flip-payload":
        data = bytearray(journal.read_bytes())
        data[end - 30] ^= 0xFF  # inside the last record's command bytes
        journal.write_bytes(bytes(data))
    elif damage == "truncate":
        with open(journal, "r+b") as f:
            f.truncate(end - 50)
    else:
        with open(journal, "r+b") as f:
            f.write(b"NOT-A-JOURNAL")
    with pytest.raises(CorruptDataError) as err:
        await RaftStore.open(cfg)
    message = str(err.value)
    assert str(journal) in message and "move" in message and "snapshot" in message


async def test_damaged_dump_and_meta_are_refused(tmp_path: Path) -> None:
    cfg = await _filled_member(tmp_path, writes=120, snapshot=True, compaction_min_entries=50)
    dump = tmp_path / DUMP_FILE
    assert dump.exists()
    good = dump.read_bytes()
    dump.write_bytes(good[: len(good) // 2])
    with pytest.raises(CorruptDataError, match=str(dump)):
        await RaftStore.open(cfg)
    dump.write_bytes(good)
    meta = Path(str(tmp_path / JOURNAL_FILE) + ".meta")
    meta.write_bytes(b"\x00garbage")
    with pytest.raises(CorruptDataError, match="term/vote"):
        await RaftStore.open(cfg)


@pytest.mark.parametrize("secret", ["", "short"])
async def test_refuses_to_start_without_a_real_secret(tmp_path: Path, secret: str) -> None:
    with pytest.raises(ConfigError, match="secret"):
        await RaftStore.open(config(tmp_path, secret=secret))
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_malformed_entries_decode_to_errors_not_commands() -> None:
    good = pack_batch([("txn", None, (), (("put", "k", b"v"),), ())])
    assert unpack_batch(good)[0][0] == "txn"
    for bad in [b"", b"\x00\x01", good[:-1], good[:4] + b"\xff" + good[5:],
                pack_batch([("txn", None, (), (("put", 7, b"v"),), ())]),
                pack_batch([("drop-table",)])]:
        decoded = unpack_batch(bad)
        assert decoded and all(isinstance(d, InvalidRequest) for d in decoded), bad


async def test_malformed_entry_in_the_log_changes_nothing(tmp_path: Path) -> None:
    store = await RaftStore.open(config(tmp_path))
    try:
        await wait_leader(store)
        await store.put("k", b"v")
        before = store.digest()
        done = asyncio.get_running_loop().create_future()
        store._replica.apply_batch(
            b"\x00\x00\x00\x00garbage",
            callback=lambda r, e: done.get_loop().call_soon_threadsafe(done.set_result, r),
        )
        results = await asyncio.wait_for(done, 5)
        assert isinstance(results[0], InvalidRequest)
        assert store.digest() == before
    finally:
        await store.close()


async def test_member_with_wrong_secret_is_refused(tmp_path: Path) -> None:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    stores = [
        await RaftStore.open(config(tmp_path / f"m{i}", address=a, peers=addrs,
                                    secret=SECRET if i < 2 else "wrong-secret-9876543210"))
        for i, a in enumerate(addrs)
    ]
    try:
        leader = await wait_leader(*stores[:2])
        for i in range(20):
            await leader.put(f"k/{i}", b"v")
        await asyncio.sleep(1.0)
        outsider = stores[2]
        assert not outsider.is_leader
        assert outsider.digest()[0] == 1, "the outsider must not have received any entry"
        follower = stores[1] if leader is stores[0] else stores[0]
        assert follower.digest() == leader.digest()
    finally:
        for s in stores:
            await s.close()


async def test_linearizable_read_on_follower_sees_write_through_other_member(
    tmp_path: Path,
) -> None:
    addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
    stores = [await RaftStore.open(config(tmp_path / f"m{i}", address=a, peers=addrs))
              for i, a in enumerate(addrs)]
    try:
        leader = await wait_leader(*stores)
        followers = [s for s in stores if s is not leader]
        for i in range(100):
            writer, reader = followers[i % 2], followers[(i + 1) % 2]
            rev = await writer.put("counter", b"%d" % i)
            kv, read_rev = await reader.get("counter")
            assert kv is not None and kv.value == b"%d" % i and read_rev >= rev
    finally:
        for s in stores:
            await s.close()


async def test_snapshot_written_but_journal_not_trimmed_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash window between pysyncobj writing a snapshot and trimming its journal."""
    from raftstore import durability

    cfg = config(tmp_path, compaction_min_entries=50)
    with monkeypatch.context() as patch:
        patch.setattr(durability.SyncedJournal, "deleteEntriesTo", lambda self, to: None)
        store = await RaftStore.open(cfg)
        await wait_leader(store)
        for i in range(150):
            await store.put(f"k/{i}", b"%d" % i)
        before = store.digest()
        await store.close()
    assert (tmp_path / DUMP_FILE).exists()
    anchor = durability.read_dump_anchor(tmp_path / DUMP_FILE)
    entries = durability.read_journal(tmp_path / JOURNAL_FILE)
    assert anchor is not None and entries[0][1] < anchor[0][1] < entries[-1][1]

    again = await RaftStore.open(cfg)
    try:
        await wait_leader(again)
        await again.get("k/0")  # a linearizable read: the log is replayed by then
        assert again.digest() == before
    finally:
        await again.close()


_FORKING_MEMBER = """
import os, sys, threading, time
import raftstore.raft as raft

def fork_sleeper():
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    print(pid, flush=True)

class SnapshottingTick(raft._TickThread):
    def __init__(self):
        threading.Thread.__init__(self)

    def run(self):
        fork_sleeper()

thread = SnapshottingTick() if sys.argv[1] == "tick" else threading.Thread(target=fork_sleeper)
thread.start()
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("forker, dies", [("tick", True), ("other", False)])
def test_snapshot_child_dies_with_its_member(forker: str, dies: bool) -> None:
    """A tick thread's fork (pysyncobj's snapshot writer) must not outlive a killed member;
    forks from other threads are not ours to change."""
    import subprocess
    import sys
    import time

    member = subprocess.Popen([sys.executable, "-c", _FORKING_MEMBER, forker],
                              stdout=subprocess.PIPE, text=True)
    child = int(member.stdout.readline())  # type: ignore[union-attr]
    try:
        member.kill()
        member.wait()
        deadline = time.monotonic() + 3
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(child) is not dies
    finally:
        if _alive(child):
            os.kill(child, 9)


class _FakeTransport:
    def __init__(self) -> None:
        self._onMessageReceivedCallback: Any = None

    def setOnMessageReceivedCallback(self, callback: Any) -> None:
        self._onMessageReceivedCallback = callback


class _FakeLeader:
    """What ``_keep_next_index_monotonic`` touches of a pysyncobj leader, with its ack rule."""

    def __init__(self) -> None:
        self._SyncObj__transport = _FakeTransport()
        self._SyncObj__raftNextIndex: dict[str, int] = {"f": 1}
        self._SyncObj__transport.setOnMessageReceivedCallback(self._on_message)

    def _on_message(self, node: str, message: dict[str, Any]) -> None:
        # pysyncobj: any successful ack or reset sets nextIndex to what the follower says.
        self._SyncObj__raftNextIndex[node] = message["next_node_idx"]

    def receive(self, **message: Any) -> None:
        self._SyncObj__transport._onMessageReceivedCallback("f", message)


@pytest.mark.parametrize("ack, reset, expected", [
    (11, False, 21),  # a late ack of the first batch must not pull nextIndex back
    (25, False, 25),  # an ack beyond what we thought was sent moves it forward
    (5, True, 5),     # a follower that lacks entries (reset) still lowers it
])
def test_late_acks_do_not_rewind_next_index(ack: int, reset: bool, expected: int) -> None:
    leader = _FakeLeader()
    _keep_next_index_monotonic(leader)  # type: ignore[arg-type]
    leader._SyncObj__raftNextIndex["f"] = 21  # batches 1-10 and 11-20 are in flight
    leader.receive(type="next_node_idx", next_node_idx=ack, reset=reset, success=not reset)
    assert leader._SyncObj__raftNextIndex["f"] == expected


async def test_a_back_off_ends_when_a_leader_becomes_known(tmp_path: Path) -> None:
    """A write that found no leader waits out its back-off step only until one is known (the
    tick thread reports it), not for the whole step: after an election it goes at once."""
    store = await RaftStore.open(config(tmp_path, election_timeout=(1.0, 2.0)))
    try:
        assert not store.is_leader  # a lone member elects itself after its election timeout
        await asyncio.wait_for(store._back_off(60.0), 20.0)
        assert store.is_leader
        assert await store.put("k", b"v") > 0
    finally:
        await store.close()
