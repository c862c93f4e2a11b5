"""Store backends for the conformance suite: a registry, one entry per backend.

Every test in this directory that takes the ``store`` fixture runs once per entry of
``BACKENDS``. To add a backend, write one async context manager that yields a fresh, empty-enough
``Store`` (tests isolate themselves with the ``prefix`` fixture, so a backend may share one
server between tests) and append a ``Backend`` to the list, e.g.::

    @asynccontextmanager
    async def open_raft3(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
        async with start_raft_members(3) as stores:   # hypothetical helper
            yield stores[0]

    BACKENDS.append(Backend("raft3", open_raft3))

A backend with several members can also pass ``members=``: a function returning a
``MemberControl`` so the member-loss tests can kill and restart them; backends without it skip
those tests.

etcd runs once per session (a 3-member cluster, short election timeout so that member-loss tests
stay fast, progress notifications every 200 ms so that PROGRESS events are observable). Without
the etcd binary its tests skip, unless CORRAL_REQUIRE_PRIVILEGED=1 demands every backend.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from raftstore.store import Store

if TYPE_CHECKING:
    from raftstore.raft import RaftStore

REQUIRE_ALL_ENV = "CORRAL_REQUIRE_PRIVILEGED"
ETCD_MEMBERS = 3
ETCD_HEARTBEAT_MS = 50
ETCD_ELECTION_MS = 500
# Must be well below the suite's PROGRESS wait (see test_store_conformance.PROGRESS_WAIT_S).
ETCD_PROGRESS_NOTIFY_S = 0.2


class MemberControl(Protocol):
    """Fault injection for multi-member backends; member 0 is the one the store talks to first."""

    size: int

    async def kill(self, i: int) -> None: ...

    async def restart(self, i: int) -> None: ...

    async def leader_index(self) -> int | None: ...


OpenStore = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Store]]


@dataclass(frozen=True)
class Backend:
    name: str
    open: OpenStore
    marks: tuple[pytest.MarkDecorator, ...] = ()
    members: Callable[[pytest.FixtureRequest], MemberControl] | None = None


# -- memory ----------------------------------------------------------------------------------


@asynccontextmanager
async def open_memory(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    from raftstore.memory import MemoryStore

    store = MemoryStore()
    try:
        yield store
    finally:
        await store.close()


# -- etcd ------------------------------------------------------------------------------------


def _etcd_api_opener(cluster_fixture: str) -> OpenStore:
    """Open an EtcdStore on the endpoints of a session cluster (real etcd, or raft members)."""

    @asynccontextmanager
    async def open_api(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
        from raftstore.etcd import EtcdStore

        cluster = request.getfixturevalue(cluster_fixture)
        store = EtcdStore(cluster.endpoints, timeout=5.0)
        try:
            yield store
        finally:
            await store.close()

    return open_api


open_etcd = _etcd_api_opener("etcd_cluster")


class _ClusterMembers:
    """MemberControl over an EtcdCluster or RaftCluster; blocking calls run in a thread."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self.size = cluster.size

    async def kill(self, i: int) -> None:
        await asyncio.to_thread(self._cluster.kill, i)

    async def restart(self, i: int) -> None:
        await asyncio.to_thread(self._cluster.restart, i)
        wait_leader = getattr(self._cluster, "wait_leader", None)
        if wait_leader is not None:  # RaftCluster.restart returns before the member is up
            await asyncio.to_thread(wait_leader)

    async def leader_index(self) -> int | None:
        result: int | None = await asyncio.to_thread(self._cluster.leader_index)
        return result


def etcd_members(request: pytest.FixtureRequest) -> MemberControl:
    return _ClusterMembers(request.getfixturevalue("etcd_cluster"))


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[object]:
    from raftstore.localetcd import EtcdCluster, EtcdNotFound

    try:
        cluster = EtcdCluster(
            ETCD_MEMBERS,
            heartbeat_ms=ETCD_HEARTBEAT_MS,
            election_ms=ETCD_ELECTION_MS,
            progress_notify_interval=ETCD_PROGRESS_NOTIFY_S,
        )
    except EtcdNotFound as exc:
        if os.environ.get(REQUIRE_ALL_ENV) == "1":
            pytest.fail(f"{REQUIRE_ALL_ENV}=1 but {exc}")
        pytest.skip(str(exc))
    with cluster:
        yield cluster


# -- raft: in-process members, and member processes behind the etcd v3 JSON gateway -------------


async def _open_raft_members(tmp_path: Path, size: int) -> list[RaftStore]:
    from raftstore.localprocess import LOOPBACK, free_ports
    from raftstore.raft import RaftConfig, RaftStore

    addrs = [f"{LOOPBACK}:{p}" for p in free_ports(size)]
    stores = [
        await RaftStore.open(
            RaftConfig(a, addrs, tmp_path / f"m{i}", secret="conformance-secret-0123",
                       heartbeat=0.05, election_timeout=(0.3, 0.6))
        )
        for i, a in enumerate(addrs)
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not any(s.is_leader for s in stores):
        assert loop.time() < deadline, "raft members elected no leader"
        await asyncio.sleep(0.02)
    return stores


def _raft_opener(size: int) -> OpenStore:
    @asynccontextmanager
    async def open_raft(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
        stores = await _open_raft_members(request.getfixturevalue("tmp_path"), size)
        try:
            # Talk to a follower when there is one: its writes and reads go through the leader.
            yield next((s for s in stores if not s.is_leader), stores[0])
        finally:
            for s in stores:
                await s.close()

    return open_raft


@pytest.fixture(scope="session")
def raft_cluster() -> Iterator[object]:
    from raftstore.localraft import RaftCluster

    with RaftCluster(3, heartbeat=0.05, election_timeout=(0.3, 0.6),
                     progress_notify_interval=ETCD_PROGRESS_NOTIFY_S) as cluster:
        yield cluster


open_gateway = _etcd_api_opener("raft_cluster")


def raft_members(request: pytest.FixtureRequest) -> MemberControl:
    return _ClusterMembers(request.getfixturevalue("raft_cluster"))


# -- the registry ----------------------------------------------------------------------------

BACKENDS: list[Backend] = [
    Backend("memory", open_memory),
    Backend("etcd", open_etcd, marks=(pytest.mark.etcd,), members=etcd_members),
    Backend("raft1", _raft_opener(1)),
    Backend("raft3", _raft_opener(3)),
    Backend("raft-gateway", open_gateway, members=raft_members),
]


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = request.param
    return backend


@pytest.fixture
async def store(backend: Backend, request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    async with backend.open(request) as opened:
        yield opened


@pytest.fixture
def members(backend: Backend, request: pytest.FixtureRequest) -> MemberControl:
    if backend.members is None:
        pytest.skip(f"backend {backend.name} has no members to kill")
    return backend.members(request)


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix no other test uses, so backends can share one server between tests."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    return f"/conformance/{name}/{uuid.uuid4().hex[:8]}/"
