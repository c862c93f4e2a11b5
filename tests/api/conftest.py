"""Fixtures of the API tests: an in-process API server, and a 3-controller control plane.

``api`` is the in-process server of tests/conftest.py's ``cluster`` plus an aiohttp session
holding the admin credential: fast, for behaviour of the REST layer. ``controllers`` runs the
garbage collector and the namespace controller against it, for tests of what deletes cascade to
(a real cluster runs them on its leader).
``control_plane`` is three real ``corral controller`` processes sharing one Raft group (one per
test module), driven by the real kubectl and the official Python client.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from harness import KUBECTL, Api, Kubectl

from controlplane.localcluster import ControlPlane, InProcessCluster


@pytest.fixture
async def api(cluster: InProcessCluster) -> AsyncIterator[Api]:
    pki = cluster.pki
    context = pki.client_ssl_context(pki.admin_cert_pem, pki.admin_key_pem)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield Api(cluster.servers[cluster.url], cluster.url, session, pki)


@pytest.fixture
async def controllers(cluster: InProcessCluster) -> AsyncIterator[None]:
    await cluster.start_controllers()
    yield
    await cluster.stop_controllers()


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(3, fsync="none") as cp:
        yield cp


@pytest.fixture(scope="module")
def kubectl(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory,
            require: Callable[[str], None]) -> Kubectl:
    if shutil.which(KUBECTL) is None:
        require("kubectl")
    return Kubectl(control_plane.kubeconfig(0), str(tmp_path_factory.mktemp("kubecache")))


@pytest.fixture
def ns(kubectl: Kubectl) -> Iterator[str]:
    """A namespace of its own for one kubectl test, deleted after it (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
