"""Fixtures every test directory may use: a cluster PKI, an in-process API server over a
MemoryStore (``controlplane.localcluster.InProcessCluster``), an admin client of it, and
``require`` for capabilities CI must have."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from controlplane.auth.pki import ClusterPKI
from controlplane.client import ApiClient
from controlplane.localcluster import InProcessCluster
from raftstore.memory import MemoryStore

REQUIRE_ALL_ENV = "CORRAL_REQUIRE_PRIVILEGED"


@pytest.fixture(scope="session")
def require() -> Callable[[str], None]:
    """``require(what)``: skip with a reason, or fail when CORRAL_REQUIRE_PRIVILEGED=1 (CI)."""
    def missing(what: str) -> None:
        if os.environ.get(REQUIRE_ALL_ENV) == "1":
            pytest.fail(f"{what} is required ({REQUIRE_ALL_ENV}=1)")
        pytest.skip(f"{what} is not available")
    return missing


@pytest.fixture
def pki(tmp_path: Path) -> ClusterPKI:
    return ClusterPKI.create(tmp_path / "pki")


@pytest.fixture
async def cluster(pki: ClusterPKI) -> AsyncIterator[InProcessCluster]:
    cluster = InProcessCluster(pki, MemoryStore())
    await cluster.start_server()
    yield cluster
    for url in list(cluster.servers):
        await cluster.stop_server(url)


@pytest.fixture
async def client(cluster: InProcessCluster) -> AsyncIterator[ApiClient]:
    async with cluster.admin_client([cluster.url]) as client:
        yield client
