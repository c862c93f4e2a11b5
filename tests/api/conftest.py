"""Fixtures of the API tests: an in-process API server, and a 3-controller control plane.

``api`` is an ApiServer over a MemoryStore, served over HTTPS with a fresh cluster PKI, plus an
aiohttp session holding the admin credential: fast, for behaviour of the REST layer.
``control_plane`` is three real ``corral controller`` processes sharing one Raft group (one per
test module), driven by the real kubectl and the official Python client.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from harness import KUBECTL, Api, Kubectl

from controlplane.api.server import ApiServer
from controlplane.auth.pki import ClusterPKI
from controlplane.localcluster import ControlPlane
from raftstore.memory import MemoryStore

REQUIRE_ALL_ENV = "CORRAL_REQUIRE_PRIVILEGED"


@pytest.fixture
def pki(tmp_path: Path) -> ClusterPKI:
    return ClusterPKI.create(tmp_path / "pki")


@pytest.fixture
async def api(pki: ClusterPKI) -> AsyncIterator[Api]:
    server = ApiServer(MemoryStore(), pki=pki, watch_progress_interval=0.2)
    cert, key = pki.issue_server_cert("test", ["127.0.0.1"])
    port = await server.start("127.0.0.1", 0, pki.server_ssl_context(cert, key))
    await server.wait_seeded()
    context = pki.client_ssl_context(pki.admin_cert_pem, pki.admin_key_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield Api(server, f"https://127.0.0.1:{port}", session, pki)
    await server.stop()


def _require(what: str) -> None:
    if os.environ.get(REQUIRE_ALL_ENV) == "1":
        pytest.fail(f"{what} is required ({REQUIRE_ALL_ENV}=1)")
    pytest.skip(f"{what} is not available")


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(3, fsync="none") as cp:
        yield cp


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    if shutil.which(KUBECTL) is None:
        _require("kubectl")
    return Kubectl(control_plane.kubeconfig(0), str(tmp_path_factory.mktemp("kubecache")))
