"""The node agent over real Docker containers, against a real in-process Controller (Raft store
on disk, HTTPS API, control loops), as ``corral up`` wires them: what must hold when the agent
or the control plane goes away while pods run.

1. An agent restart adopts what runs: same containers, no restart, the same pod status.
2. A control-plane outage (slow): the pods keep running, a container killed meanwhile is
   restarted locally, and once a new controller serves the same data dir on the same ports the
   pod's and the Node's status converge again (restartCount 1, lastState 137, Node Ready).
3. Container GC: a container killed twice leaves at most two instances (the running one and
   the one ``lastState`` and ``logs --previous`` read).

Isolation: Docker is shared with whatever else runs on this host (``corral up``, other test
modules). Agents touch only the objects labelled with their own node's name, and each test's
node name is its own, so neither side can adopt or remove the other's. The runtime has no pod
network (Docker's own bridge), so nothing here touches the host's network. Every container of
a test's node is removed at its teardown, whatever failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.auth.authn import NODE_USER_PREFIX, NODES_GROUP
from controlplane.client import LEASES, NAMESPACES, NODES, PODS, ApiClient, ApiError
from controlplane.controller import Controller, ControllerConfig, ensure_raft_secret
from nodeagent.agent import Agent, AgentConfig
from nodeagent.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_NODE_NAME,
    LABEL_POD_UID,
)
from nodeagent.runtime.docker import DockerRuntime
from raftstore.localprocess import free_ports
from raftstore.raft import RaftConfig
from tests.controllers.ctlharness import eventually, running
from tests.nodeagent.runtimekit import base_image, remove_labelled

log = logging.getLogger(__name__)

RUN = uuid.uuid4().hex[:12]
#: This run's own node: agents touch only their node's objects.
NODE = f"docker-{RUN}"
NAMESPACE = f"agent-docker-{RUN}"
#: How long test 2 keeps the control plane down.
OUTAGE_SECONDS = 60.0

Obj = dict[str, Any]


# -- Docker -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image(docker_client: Any) -> Iterator[str]:
    with base_image(docker_client, f"corral-test/agent:{RUN}", {LABEL_NODE_NAME: NODE}) as tag:
        yield tag


@pytest.fixture
def scope(docker_client: Any, image: str) -> Iterator[str]:
    """This run's node name; the test's containers go when it ends, so a failed test leaves
    nothing running for the next."""
    yield NODE
    remove_labelled(docker_client, {LABEL_NODE_NAME: NODE})


def containers_of(docker_client: Any, uid: str, name: str | None = None) -> list[Obj]:
    """The engine's own view (not the runtime's) of a pod's containers, sandbox included
    unless ``name`` picks one container; each with its id, state and labels."""
    wanted = [f"{LABEL_POD_UID}={uid}"]
    if name is not None:
        wanted.append(f"{LABEL_CONTAINER_NAME}={name}")
    found = docker_client.api.containers(all=True, filters={"label": wanted})
    return [{"id": c["Id"], "state": c["State"], "labels": c["Labels"]} for c in found]


def running_ids(docker_client: Any, uid: str) -> set[str]:
    return {c["id"] for c in containers_of(docker_client, uid) if c["state"] == "running"}


# -- the control plane ---------------------------------------------------------------------------

class ControlPlane:
    """One controller on fixed ports and a fixed data dir: ``stop`` then ``start`` again is an
    outage, and the agent's client (one URL) finds the new controller where the old one was."""

    def __init__(self, data_dir: Path) -> None:
        api_port, peer_port = free_ports(2)
        controller_dir = data_dir / "controller"
        self.config = ControllerConfig(
            listen_api=f"127.0.0.1:{api_port}",
            raft=RaftConfig(address=f"127.0.0.1:{peer_port}", peers=[], data_dir=controller_dir,
                            secret=ensure_raft_secret(controller_dir).read_text().strip()),
            pki_dir=data_dir / "pki")
        self.url = f"https://127.0.0.1:{api_port}"
        self.controller: Controller | None = None

    async def start(self) -> None:
        controller = Controller(self.config)
        await controller.start()
        self.controller = controller

    async def stop(self) -> None:
        if self.controller is not None:
            controller, self.controller = self.controller, None
            await controller.stop()

    def admin_client(self) -> ApiClient:
        pki = self._pki()
        return ApiClient([self.url], pki.client_ssl_context(pki.admin_cert_pem,
                                                            pki.admin_key_pem))

    def node_client(self, node: str) -> ApiClient:
        """The agent's credential, as ``corral up`` issues it: user system:node:<name>."""
        pki = self._pki()
        cert, key = pki.issue_client_cert(f"{NODE_USER_PREFIX}{node}", [NODES_GROUP])
        return ApiClient([self.url], pki.client_ssl_context(cert, key),
                         user_agent="corral-agent")

    def _pki(self) -> Any:
        assert self.controller is not None and self.controller.pki is not None
        return self.controller.pki


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(tmp_path)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


@pytest.fixture
async def admin(plane: ControlPlane) -> AsyncIterator[ApiClient]:
    """An admin client, once the store has its leader; this run's namespace exists."""
    async with plane.admin_client() as client:
        await eventually(lambda: _create_namespace(client), timeout=30, what="the API")
        yield client


async def _create_namespace(client: ApiClient) -> bool:
    try:
        await client.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": NAMESPACE}})
    except ApiError as exc:
        return exc.status == 409
    return True


@pytest.fixture
async def node_client(plane: ControlPlane, admin: ApiClient) -> AsyncIterator[ApiClient]:
    async with plane.node_client(NODE) as client:
        yield client


# -- the agent -----------------------------------------------------------------------------------

def make_agent(node_client: ApiClient, docker_client: Any, image: str, node: str,
               data_dir: Path) -> Agent:
    """A new agent with a new runtime object each time, as a restarted process has."""
    config = AgentConfig(node_name=node, data_dir=data_dir / "agent", node_ip="127.0.0.1",
                         capacity={"cpu": "4", "memory": "8Gi", "pods": "110"},
                         relist_period=0.5, sync_period=5.0, renew_period=2.0,
                         container_runtime_version="docker://test")

    async def factory(node: Obj) -> Any:
        return DockerRuntime(docker_client, sandbox_image=image)

    return Agent(node_client, config, factory)


def pod(name: str, image: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"nodeName": NODE, "restartPolicy": "Always",
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "web", "image": image, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}}


async def get_pod(client: ApiClient, name: str) -> Obj:
    return await client.get(PODS, NAMESPACE, name)


def web_status(p: Obj) -> Obj:
    [cs] = (p.get("status") or {}).get("containerStatuses") or [{}]
    return cs


def condition(obj: Obj, kind: str) -> str | None:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions") or ()
                 if c["type"] == kind), None)


async def running_pod(client: ApiClient, name: str, restarts: int = 0) -> Obj | None:
    """The pod once it runs and is Ready with ``restarts`` restarts; None before."""
    try:
        p = await get_pod(client, name)
    except (ApiError, OSError):
        return None  # the control plane is still coming back
    cs = web_status(p)
    ok = (p["status"].get("phase") == "Running" and condition(p, "Ready") == "True"
          and cs.get("restartCount") == restarts and "running" in cs.get("state", {}))
    return p if ok else None


async def wait_attempt(docker_client: Any, uid: str, attempt: int, timeout: float) -> str:
    """The id of the running instance ``attempt`` of container web, once there is one."""
    def find() -> str | None:
        for c in containers_of(docker_client, uid, "web"):
            if c["state"] == "running" and c["labels"].get(LABEL_ATTEMPT) == str(attempt):
                return str(c["id"])
        return None

    async def check() -> str | None:
        return await asyncio.to_thread(find)

    return str(await eventually(check, timeout=timeout, what=f"web attempt {attempt} running"))


def web_id(docker_client: Any, uid: str) -> str:
    [c] = [c for c in containers_of(docker_client, uid, "web") if c["state"] == "running"]
    return str(c["id"])


# -- the tests -----------------------------------------------------------------------------------

@pytest.mark.privileged
async def test_a_restarted_agent_adopts_running_containers(
        admin: ApiClient, node_client: ApiClient, docker_client: Any, image: str,
        scope: str, tmp_path: Path) -> None:
    async with running(make_agent(node_client, docker_client, image, scope, tmp_path).run()) \
            as [task]:
        await admin.create(PODS, NAMESPACE, pod("steady", image))
        before = await eventually(lambda: running_pod(admin, "steady"), timeout=30)
    assert task.done()  # the agent ended; its containers did not
    uid = before["metadata"]["uid"]
    ids = running_ids(docker_client, uid)
    assert len(ids) == 2  # the sandbox and web
    assert web_status(before)["containerID"] == f"docker://{web_id(docker_client, uid)}"

    agent = make_agent(node_client, docker_client, image, scope, tmp_path)
    async with running(agent.run()):
        await asyncio.wait_for(agent.ready.wait(), 30)
        await asyncio.sleep(3)  # relists every 0.5 s; every pod synced at least once
        assert running_ids(docker_client, uid) == ids
        assert {c["id"] for c in containers_of(docker_client, uid)} == ids  # nothing created
        after = await get_pod(admin, "steady")
        assert web_status(after)["restartCount"] == 0
        assert after["status"]["conditions"] == before["status"]["conditions"]
        assert after["status"]["containerStatuses"] == before["status"]["containerStatuses"]
        assert after["status"] == before["status"]
        assert await running_pod(admin, "steady") is not None


@pytest.mark.privileged
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_pods_survive_a_control_plane_outage_and_status_converges(
        plane: ControlPlane, admin: ApiClient, node_client: ApiClient, docker_client: Any,
        image: str, scope: str, tmp_path: Path) -> None:
    agent = make_agent(node_client, docker_client, image, scope, tmp_path)
    async with running(agent.run()):
        await admin.create(PODS, NAMESPACE, pod("survivor", image))
        before = await eventually(lambda: running_pod(admin, "survivor"), timeout=30)
        uid = before["metadata"]["uid"]
        sandbox_and_first = running_ids(docker_client, uid)
        first = web_id(docker_client, uid)
        lease_before = (await admin.get(LEASES, "kube-node-lease", NODE))["spec"]["renewTime"]

        await plane.stop()
        began = time.monotonic()
        killed = False
        while time.monotonic() - began < OUTAGE_SECONDS:
            ids = running_ids(docker_client, uid)
            if not killed:
                assert ids == sandbox_and_first, "a container stopped in the outage"
            if not killed and time.monotonic() - began > 10:
                docker_client.api.kill(first)  # SIGKILL: exit code 137
                killed = True
                # Restarted by the agent alone: its informer cache still has the pod.
                second = await wait_attempt(docker_client, uid, 1, timeout=15)
                log.warning("restarted in the outage %.1f s after the kill",
                            time.monotonic() - began - 10)
                sandbox = sandbox_and_first - {first}
                assert running_ids(docker_client, uid) == sandbox | {second}
            elif killed:
                assert ids == sandbox | {second}, "a container stopped in the outage"
            await asyncio.sleep(3)
        assert killed

        await plane.start()  # a new controller: same data dir, same ports
        back = time.monotonic()
        after = await eventually(lambda: running_pod(admin, "survivor", restarts=1),
                                 timeout=30, what="the pod's status reconciled")
        log.warning("pod status reconciled %.1f s after the control plane came back",
                    time.monotonic() - back)
        cs = web_status(after)
        assert cs["lastState"]["terminated"]["exitCode"] == 137
        assert cs["containerID"] == f"docker://{second}"
        assert condition(after, "Ready") == "True"
        await eventually(lambda: _node_ready_and_renewed(admin, lease_before), timeout=30,
                         what="the Node Ready, its Lease renewed")
        log.warning("node Ready, lease renewed %.1f s after", time.monotonic() - back)
        assert time.monotonic() - back < 30
        # The agent's watch came back too: a pod created now runs.
        await admin.create(PODS, NAMESPACE, pod("newcomer", image))
        await eventually(lambda: running_pod(admin, "newcomer"), timeout=30,
                         what="a pod created after the outage running")
        assert running_ids(docker_client, uid) == sandbox | {second}


async def _node_ready_and_renewed(client: ApiClient, lease_before: str) -> bool:
    try:
        node = await client.get(NODES, "", NODE)
        lease = await client.get(LEASES, "kube-node-lease", NODE)
    except (ApiError, OSError):
        return False
    return condition(node, "Ready") == "True" and lease["spec"]["renewTime"] != lease_before


@pytest.mark.privileged
async def test_a_container_killed_twice_leaves_at_most_two_instances(
        admin: ApiClient, node_client: ApiClient, docker_client: Any, image: str,
        scope: str, tmp_path: Path) -> None:
    """Two kills: the first restarts at once, the second after the 10 s back-off; a third
    would wait 20 s more and prove nothing new about GC."""
    agent = make_agent(node_client, docker_client, image, scope, tmp_path)
    async with running(agent.run()):
        await admin.create(PODS, NAMESPACE, pod("crashy", image))
        p = await eventually(lambda: running_pod(admin, "crashy"), timeout=30)
        uid = p["metadata"]["uid"]
        docker_client.api.kill(web_id(docker_client, uid))
        second = await wait_attempt(docker_client, uid, 1, timeout=15)
        docker_client.api.kill(second)
        third = await wait_attempt(docker_client, uid, 2, timeout=25)

        def instances() -> list[Obj]:
            return containers_of(docker_client, uid, "web")

        async def collected() -> bool:
            return len(await asyncio.to_thread(instances)) <= 2

        await eventually(collected, timeout=10, what="container GC")
        left = {c["labels"][LABEL_ATTEMPT]: (c["id"], c["state"]) for c in instances()}
        assert left == {"1": (second, "exited"), "2": (third, "running")}
        p = await eventually(lambda: running_pod(admin, "crashy", restarts=2), timeout=15)
        assert web_status(p)["lastState"]["terminated"]["exitCode"] == 137
        await asyncio.sleep(2)  # later syncs remove nothing more
        assert len(instances()) == 2
