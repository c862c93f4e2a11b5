"""Three RaftStore members in separate processes on loopback, driven through their etcd v3 JSON
endpoints: SIGKILL the leader mid-stream, kill and restart everyone at once, read on followers.

The invariant every test checks: a write the client saw acknowledged is present afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from raftstore.etcd import EtcdStore
from raftstore.localraft import RaftCluster
from raftstore.store import StoreError

pytestmark = pytest.mark.slow
ROUNDS = 10


@pytest.fixture(scope="module")
def cluster() -> Iterator[RaftCluster]:
    with RaftCluster(3, heartbeat=0.05, election_timeout=(0.3, 0.6)) as c:
        yield c


@pytest.fixture
async def client(cluster: RaftCluster) -> AsyncIterator[EtcdStore]:
    store = EtcdStore(cluster.endpoints, timeout=2.0)
    try:
        yield store
    finally:
        await store.close()


class Writers:
    """Concurrent writers of unique keys; remembers every write that was acknowledged."""

    def __init__(self, client: EtcdStore, prefix: str, count: int = 4) -> None:
        self.client = client
        self.prefix = prefix
        self.acked: dict[str, int] = {}
        self.acked_at: list[float] = []
        self.failed = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(w)) for w in range(count)]

    async def _run(self, w: int) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            key = f"{self.prefix}{w}/{n}"
            try:
                self.acked[key] = await self.client.put(key, key.encode())
                self.acked_at.append(time.monotonic())
            except StoreError:
                self.failed += 1  # outcome unknown: not acknowledged, not checked
                await asyncio.sleep(0.02)

    def acked_since(self, t: float) -> int:
        return sum(1 for a in self.acked_at if a > t)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def assert_all_present(client: EtcdStore, prefix: str, acked: dict[str, int]) -> None:
    result = await client.range(prefix)
    present = {kv.key: kv.mod_revision for kv in result.kvs}
    lost = [k for k in acked if k not in present]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    moved = [k for k, rev in acked.items() if present[k] != rev]
    assert not moved, f"acknowledged revisions changed: {moved[:5]}"


async def converged(cluster: RaftCluster, timeout: float = 20.0) -> None:
    def same() -> bool:
        try:
            digests = {cluster.digest(i) for i in range(cluster.size)}
        except OSError:
            return False
        return len(digests) == 1

    await wait_for(same, timeout, "all replicas to reach the same state")


async def test_kill_leader_during_writes(cluster: RaftCluster, client: EtcdStore) -> None:
    for round_ in range(ROUNDS):
        prefix = f"/ha/kill-leader/{round_}/"
        old = await asyncio.to_thread(cluster.wait_leader)
        writers = Writers(client, prefix)
        await wait_for(lambda: len(writers.acked) >= 20, 10, "writes before the kill")
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, old)
        await wait_for(lambda: writers.acked_since(killed_at + 0.01) >= 20, 15,
                       "writes to resume on a new leader")
        await writers.stop()
        new = await asyncio.to_thread(cluster.wait_leader)
        assert new != old
        await assert_all_present(client, prefix, writers.acked)
        await asyncio.to_thread(cluster.restart, old)
        await converged(cluster)


async def test_restart_all_members_at_once(cluster: RaftCluster, client: EtcdStore) -> None:
    for round_ in range(ROUNDS):
        prefix = f"/ha/restart-all/{round_}/"
        await asyncio.to_thread(cluster.wait_leader)
        writers = Writers(client, prefix)
        await wait_for(lambda: len(writers.acked) >= 30, 10, "writes before the crash")
        for i in range(cluster.size):  # as close to simultaneous as SIGKILLs get
            cluster.kill(i)
        await writers.stop()
        for i in range(cluster.size):
            cluster.restart(i)
        await asyncio.to_thread(cluster.wait_leader)
        await assert_all_present(client, prefix, writers.acked)
        await converged(cluster)


async def test_linearizable_read_on_follower(cluster: RaftCluster) -> None:
    leader = await asyncio.to_thread(cluster.wait_leader)
    a, b = [i for i in range(cluster.size) if i != leader]
    writer = EtcdStore([cluster.endpoints[a]], timeout=2.0)
    reader = EtcdStore([cluster.endpoints[b]], timeout=2.0)
    try:
        for n in range(100):
            rev = await writer.put("/ha/read-your-writes", b"%d" % n)
            kv, read_rev = await reader.get("/ha/read-your-writes")
            assert kv is not None and kv.value == b"%d" % n and read_rev >= rev
    finally:
        await writer.close()
        await reader.close()


async def test_member_with_wrong_secret_is_refused(cluster: RaftCluster) -> None:
    leader = await asyncio.to_thread(cluster.wait_leader)
    client = EtcdStore([cluster.endpoints[leader]], timeout=2.0)
    outsider = (leader + 1) % cluster.size
    wrong = cluster.secret_file + ".wrong"
    with open(wrong, "w") as f:
        f.write("not-the-cluster-secret-at-all")
    await asyncio.to_thread(cluster.restart, outsider, secret_file=wrong)
    try:
        await asyncio.sleep(1.0)
        before = cluster.digest(outsider)[0]
        for n in range(20):
            await client.put(f"/ha/secret/{n}", b"x")
        await asyncio.sleep(1.0)
        assert cluster.digest(outsider)[0] == before, "a member with the wrong secret got data"
        assert cluster.leader_index() != outsider
        assert "Traceback" not in cluster.log_tail(outsider)
    finally:
        await client.close()
        await asyncio.to_thread(cluster.restart, outsider)
        await converged(cluster)
