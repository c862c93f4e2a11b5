"""Fixtures of the controller tests: an in-process API server and an admin client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlplane.auth.pki import ClusterPKI
from controlplane.client import ApiClient
from controlplane.localcluster import InProcessCluster
from raftstore.memory import MemoryStore


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    cluster = InProcessCluster(ClusterPKI.create(tmp_path / "pki"), MemoryStore())
    await cluster.start_server()
    yield cluster
    for url in list(cluster.servers):
        await cluster.stop_server(url)


@pytest.fixture
async def client(cluster: InProcessCluster) -> AsyncIterator[ApiClient]:
    async with cluster.admin_client([cluster.url]) as client:
        yield client
