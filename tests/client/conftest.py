"""Fixtures of the client tests: a cluster PKI, an in-process API server over a MemoryStore
served over HTTPS (more can join it), and an admin ``ApiClient`` of it, in the style of
tests/api/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.auth.pki import ClusterPKI
from controlplane.client import ApiClient
from controlplane.localcluster import InProcessCluster as Cluster
from raftstore.memory import MemoryStore


@pytest.fixture
def pki(tmp_path: Path) -> ClusterPKI:
    return ClusterPKI.create(tmp_path / "pki")


@pytest.fixture
async def cluster(pki: ClusterPKI) -> AsyncIterator[Cluster]:
    cluster = Cluster(pki, MemoryStore())
    await cluster.start_server()
    yield cluster
    for url in list(cluster.servers):
        await cluster.stop_server(url)


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[ApiClient]:
    async with cluster.admin_client([cluster.url]) as client:
        yield client
