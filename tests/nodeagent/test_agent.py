"""The agent against an in-process API, over FakeRuntime, with the node's own credential: what
the kubelet promises (registration, heartbeat, pod status, restarts and back-off, graceful
deletion, adoption after a restart, bad specs reported, strays removed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.client import (
    EVENTS,
    LEASES,
    NODES,
    PODS,
    ApiClient,
    NotFound,
    Unavailable,
)
from controlplane.localcluster import InProcessCluster
from nodeagent.agent import Agent, AgentConfig, ApiLookup
from nodeagent.runtime.base import (
    LABEL_MANAGED,
    LABEL_NODE_NAME,
    LABEL_POD_UID,
    ContainerState,
    SandboxConfig,
)
from nodeagent.runtime.fake import FakeRuntime
from tests.controllers.ctlharness import eventually, running

NODE = "node-a"
IMAGE = "corral/base:1"


@pytest.fixture
def rt() -> FakeRuntime:
    return FakeRuntime(time.time, images={IMAGE})


@pytest.fixture
async def node_client(cluster: InProcessCluster) -> AsyncIterator[ApiClient]:
    async with cluster.node_client(NODE, [cluster.url]) as client:
        yield client


def make_agent(client: ApiClient, rt: FakeRuntime, tmp_path: Path, **kw: Any) -> Agent:
    config = AgentConfig(node_name=NODE, data_dir=tmp_path / "agent", node_ip="198.18.0.7",
                         labels={"zone": "a"},
                         taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}],
                         capacity={"cpu": "4", "memory": "8Gi", "pods": "110"},
                         relist_period=0.05, sync_period=5.0, renew_period=0.2, **kw)

    async def factory(node: dict[str, Any]) -> FakeRuntime:
        return rt

    return Agent(client, config, factory)


def pod(name: str, *, policy: str = "Always", image: str = IMAGE, grace: int = 5,
        **container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "restartPolicy": policy,
                     "terminationGracePeriodSeconds": grace,
                     "containers": [{"name": "c", "image": image,
                                     "imagePullPolicy": "IfNotPresent", **container}]}}


async def status_of(client: ApiClient, name: str) -> dict[str, Any]:
    return (await client.get(PODS, "default", name)).get("status") or {}


def container_status(status: dict[str, Any]) -> dict[str, Any]:
    [cs] = status.get("containerStatuses") or [{}]
    return cs


async def reasons(client: ApiClient, name: str) -> set[str]:
    events = (await client.list(EVENTS, "default")).items
    return {e["reason"] for e in events if e["involvedObject"]["name"] == name}


async def test_registers_and_heartbeats(client: ApiClient, node_client: ApiClient,
                                        rt: FakeRuntime, tmp_path: Path) -> None:
    agent = make_agent(node_client, rt, tmp_path)
    async with running(agent.run()):
        await asyncio.wait_for(agent.ready.wait(), 10)
        node = await client.get(NODES, "", NODE)
        assert node["metadata"]["labels"]["zone"] == "a"
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == NODE
        assert node["spec"]["taints"] == [{"key": "dedicated", "value": "x",
                                           "effect": "NoSchedule"}]
        status = node["status"]
        assert status["capacity"]["cpu"] == "4" and status["allocatable"]["pods"] == "110"
        assert {"type": "InternalIP", "address": "198.18.0.7"} in status["addresses"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
        first = (await client.get(LEASES, "kube-node-lease", NODE))["spec"]["renewTime"]
        await eventually(lambda: _renewed(client, first))


async def _renewed(client: ApiClient, first: str) -> bool:
    lease = await client.get(LEASES, "kube-node-lease", NODE)
    return lease["spec"]["renewTime"] != first


async def test_runs_a_pod_and_reports_it(client: ApiClient, node_client: ApiClient,
                                         rt: FakeRuntime, tmp_path: Path) -> None:
    agent = make_agent(node_client, rt, tmp_path)
    async with running(agent.run()):
        await client.create(PODS, "default", pod("web", env=[
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]))
        status = await eventually(lambda: _phase(client, "web", "Running"))
        assert status["hostIP"] == "198.18.0.7" and status["podIP"]
        assert status["startTime"]
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions == {"PodScheduled": "True", "Initialized": "True",
                              "ContainersReady": "True", "Ready": "True"}
        cs = container_status(status)
        assert cs["ready"] and cs["restartCount"] == 0 and "running" in cs["state"]
        [ctr] = await rt.list_containers()
        assert ("NODE", NODE) in ctr_env(rt, ctr.id)
        assert {"Created", "Started", "Pulled"} <= await eventually(
            lambda: _has_reasons(client, "web", {"Created", "Started", "Pulled"}))


def ctr_env(rt: FakeRuntime, container_id: str) -> tuple[tuple[str, str], ...]:
    return rt.configs[container_id].env


async def _has_reasons(client: ApiClient, name: str, wanted: set[str]) -> set[str] | None:
    found = await reasons(client, name)
    return found if wanted <= found else None


async def _phase(client: ApiClient, name: str, phase: str) -> dict[str, Any] | None:
    status = await status_of(client, name)
    return status if status.get("phase") == phase and status.get("containerStatuses") else None


async def test_a_killed_container_restarts_in_place_then_backs_off(
        client: ApiClient, node_client: ApiClient, rt: FakeRuntime, tmp_path: Path) -> None:
    agent = make_agent(node_client, rt, tmp_path)
    async with running(agent.run()):
        await client.create(PODS, "default", pod("crashy"))
        await eventually(lambda: _phase(client, "crashy", "Running"))
        [first] = await rt.list_containers()
        rt.exit_container(first.id, 137)
        status = await eventually(lambda: _restarts(client, "crashy", 1, "running"))
        assert container_status(status)["lastState"]["terminated"]["exitCode"] == 137
        running_now = [c for c in await rt.list_containers()
                       if c.state is ContainerState.RUNNING]
        rt.exit_container(running_now[0].id, 1)
        status = await eventually(lambda: _waiting(client, "crashy", "CrashLoopBackOff"))
        assert "back-off 10s" in container_status(status)["state"]["waiting"]["message"]
        assert container_status(status)["lastState"]["terminated"]["exitCode"] == 1
        assert "BackOff" in await eventually(lambda: _has_reasons(client, "crashy", {"BackOff"}))


async def _restarts(client: ApiClient, name: str, count: int, state: str
                    ) -> dict[str, Any] | None:
    status = await status_of(client, name)
    cs = container_status(status)
    return status if cs.get("restartCount") == count and state in cs.get("state", {}) else None


async def _waiting(client: ApiClient, name: str, reason: str) -> dict[str, Any] | None:
    status = await status_of(client, name)
    waiting = container_status(status).get("state", {}).get("waiting") or {}
    return status if waiting.get("reason") == reason else None


async def test_never_pod_whose_container_dies_ends_failed_with_its_exit_code(
        client: ApiClient, node_client: ApiClient, rt: FakeRuntime, tmp_path: Path) -> None:
    agent = make_agent(node_client, rt, tmp_path)
    async with running(agent.run()):
        await client.create(PODS, "default", pod("once", policy="Never"))
        await eventually(lambda: _phase(client, "once", "Running"))
        [ctr] = await rt.list_containers()
        rt.exit_container(ctr.id, 3)
        status = await eventually(lambda: _phase(client, "once", "Failed"))
        terminated = container_status(status)["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
        assert container_status(status)["restartCount"] == 0
        await asyncio.sleep(0.3)
        assert len(await rt.list_containers()) == 1  # not restarted


async def test_graceful_deletion_stops_then_deletes(client: ApiClient, node_client: ApiClient,
                                                    rt: FakeRuntime, tmp_path: Path) -> None:
    agent = make_agent(node_client, rt, tmp_path)
    async with running(agent.run()):
        await client.create(PODS, "default", pod("bye", grace=7))
        await eventually(lambda: _phase(client, "bye", "Running"))
        await client.delete(PODS, "default", "bye")
        await eventually(lambda: _gone(client, "bye"))
        assert rt.stops[0][1] == 7.0  # the grace period: SIGTERM, SIGKILL 7 s later
        await eventually(lambda: _runtime_empty(rt))


async def _gone(client: ApiClient, name: str) -> bool:
    try:
        await client.get(PODS, "default", name)
    except NotFound:
        return True
    return False


async def _runtime_empty(rt: FakeRuntime) -> bool:
    return not await rt.list_containers() and not await rt.list_sandboxes()


async def test_a_restarted_agent_adopts_running_pods(client: ApiClient, node_client: ApiClient,
                                                     rt: FakeRuntime, tmp_path: Path) -> None:
    async with running(make_agent(node_client, rt, tmp_path).run()):
        await client.create(PODS, "default", pod("steady"))
        await eventually(lambda: _phase(client, "steady", "Running"))
    before = await status_of(client, "steady")
    ids = [c.id for c in await rt.list_containers()]
    agent = make_agent(node_client, rt, tmp_path)
    async with running(agent.run()):
        await asyncio.wait_for(agent.ready.wait(), 10)
        await asyncio.sleep(0.5)  # several relists and syncs
        assert [c.id for c in await rt.list_containers()] == ids
        after = await status_of(client, "steady")
        assert container_status(after)["restartCount"] == 0
        assert after["conditions"] == before["conditions"]
        assert container_status(after)["state"] == container_status(before)["state"]


async def test_bad_specs_are_reported_and_other_pods_run(
        client: ApiClient, node_client: ApiClient, rt: FakeRuntime, tmp_path: Path) -> None:
    rt.create_failures["broken"] = 'exec: "nope": executable file not found in $PATH'
    agent = make_agent(node_client, rt, tmp_path)
    async with running(agent.run()):
        await client.create(PODS, "default", pod("missing-image", image="nothere:1",
                                                 imagePullPolicy="Never"))
        await client.create(PODS, "default", {**pod("nocmd"), "spec": {
            **pod("nocmd")["spec"], "containers": [{"name": "broken", "image": IMAGE}]}})
        await client.create(PODS, "default", pod("cfg", env=[
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]))
        await client.create(PODS, "default", pod("fine"))
        status = await eventually(lambda: _waiting(client, "missing-image",
                                                   "ErrImageNeverPull"))
        assert "is not present with pull policy of Never" in \
            container_status(status)["state"]["waiting"]["message"]
        status = await eventually(lambda: _waiting_any(client, "nocmd", "CreateContainerError"))
        assert "executable file not found" in json_of(status)
        await eventually(lambda: _waiting(client, "cfg", "CreateContainerConfigError"))
        await eventually(lambda: _phase(client, "fine", "Running"))
        assert "ErrImageNeverPull" in await reasons(client, "missing-image")
        assert "Failed" in await reasons(client, "nocmd")


def json_of(obj: Any) -> str:
    import json

    return json.dumps(obj)


async def _waiting_any(client: ApiClient, name: str, reason: str) -> dict[str, Any] | None:
    status = await status_of(client, name)
    for cs in status.get("containerStatuses") or []:
        if (cs.get("state", {}).get("waiting") or {}).get("reason") == reason:
            return status
    return None


async def test_runtime_objects_of_unknown_pods_are_removed(
        client: ApiClient, node_client: ApiClient, rt: FakeRuntime, tmp_path: Path) -> None:
    stray = await rt.run_sandbox(SandboxConfig(
        "gone-uid", "default", "gone", "gone",
        labels={LABEL_MANAGED: "true", LABEL_POD_UID: "gone-uid", LABEL_NODE_NAME: NODE}))
    # Another node's pod on the same engine (a lab's agents share one): not this agent's.
    other = await rt.run_sandbox(SandboxConfig(
        "other-uid", "default", "other", "other",
        labels={LABEL_MANAGED: "true", LABEL_POD_UID: "other-uid", LABEL_NODE_NAME: "node-b"}))
    agent = make_agent(node_client, rt, tmp_path)
    async with running(agent.run()):
        await eventually(lambda: _no_sandbox(rt, stray))
        await asyncio.sleep(0.3)  # several more relists
        assert any(b.id == other for b in await rt.list_sandboxes())


async def _no_sandbox(rt: FakeRuntime, sandbox_id: str) -> bool:
    return all(b.id != sandbox_id for b in await rt.list_sandboxes())


async def test_configmaps_and_secrets_are_remembered_for_an_outage() -> None:
    class Flaky:
        """A client that answers once, then finds no controller."""

        def __init__(self) -> None:
            self.calls = 0

        async def get(self, res: Any, namespace: str, name: str) -> dict[str, Any]:
            self.calls += 1
            if self.calls > 1:
                raise Unavailable({"code": 503, "reason": "ServiceUnavailable",
                                   "message": "no controller answered"})
            return {"metadata": {"name": name}, "data": {"k": "v"}}

    lookup = ApiLookup(Flaky())  # type: ignore[arg-type]
    first = await lookup.get("configmaps", "default", "app")
    assert await lookup.get("configmaps", "default", "app") == first
    with pytest.raises(Unavailable):
        await lookup.get("secrets", "default", "never-seen")
