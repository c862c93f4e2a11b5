"""Hollow nodes with the scheduler and the ReplicaSet controller: a whole control loop in one
process — pods created, placed, reported Running and Ready, replaced when deleted."""

from __future__ import annotations

from typing import Any

from ctlharness import eventually, running

from controlplane.client import LEASES, NODES, PODS, REPLICASETS, ApiClient
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.controllers.scheduler import Scheduler
from nodeagent.hollow import HollowFleet

Obj = dict[str, Any]



async def test_replicaset_on_hollow_nodes(client: ApiClient) -> None:
    fleet = HollowFleet(client, [f"hollow-{i}" for i in range(3)])
    async with running(fleet.run(), Scheduler(client).run(), ReplicaSetController(client).run()):
        labels = {"app": "h"}
        await client.create(REPLICASETS, "default", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "h"},
            "spec": {"replicas": 6, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [{"name": "c", "image": "busybox",
                                         "resources": {"requests": {"cpu": "100m"}}}]}}}})

        async def ready() -> bool:
            rs = await client.get(REPLICASETS, "default", "h")
            return (rs.get("status") or {}).get("readyReplicas") == 6

        await eventually(ready)
        pods = (await client.list(PODS, "default", label_selector="app=h")).items
        assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(
            [f"hollow-{i}" for i in range(3)] * 2)
        assert all(p["status"]["phase"] == "Running" for p in pods)
        nodes = (await client.list(NODES)).items
        assert {n["metadata"]["name"] for n in nodes} == {f"hollow-{i}" for i in range(3)}
        leases = (await client.list(LEASES, "kube-node-lease")).items
        assert {lease["spec"]["holderIdentity"] for lease in leases} == \
            {f"hollow-{i}" for i in range(3)}

        victim = pods[0]["metadata"]["name"]
        await client.delete(PODS, "default", victim)  # graceful: the hollow kubelet finishes it

        async def replaced() -> bool:
            now = (await client.list(PODS, "default", label_selector="app=h")).items
            names = {p["metadata"]["name"] for p in now}
            running = [p for p in now if (p.get("status") or {}).get("phase") == "Running"]
            return victim not in names and len(running) == 6

        await eventually(replaced)
