"""A node that stops renewing its lease goes NotReady, its pods are evicted and replaced."""

from __future__ import annotations

import asyncio
from typing import Any

from ctlharness import eventually, running

from controlplane.client import NODES, PODS, REPLICASETS, ApiClient
from controlplane.controllers.nodelifecycle import (
    TAINT_UNREACHABLE,
    NodeLifecycleController,
    toleration_seconds,
)
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.controllers.scheduler import Scheduler
from nodeagent.hollow import HollowFleet

Obj = dict[str, Any]


def test_toleration_seconds_table() -> None:
    def pod(*tolerations: Obj) -> Obj:
        return {"spec": {"tolerations": list(tolerations)}}

    key = TAINT_UNREACHABLE
    assert toleration_seconds(pod(), key, 300) == 300
    assert toleration_seconds(pod({"key": key, "operator": "Exists", "effect": "NoExecute",
                                   "tolerationSeconds": 5}), key, 300) == 5
    assert toleration_seconds(pod({"key": key, "operator": "Exists"}), key, 300) is None
    assert toleration_seconds(pod({"operator": "Exists"}), key, 300) is None
    assert toleration_seconds(pod({"key": "other", "operator": "Exists"}), key, 300) == 300
    assert toleration_seconds(pod({"key": key, "effect": "NoSchedule"}), key, 300) == 300
    # The smallest limit among matching tolerations wins over an unlimited one.
    assert toleration_seconds(pod({"operator": "Exists"},
                                  {"key": key, "operator": "Exists", "effect": "NoExecute",
                                   "tolerationSeconds": 60}), key, 300) == 60
    # Equal compares the value: the unreachable taint has none.
    assert toleration_seconds(pod({"key": key, "operator": "Equal", "value": "x"}),
                              key, 300) == 300


async def test_lost_node_is_tainted_and_its_pods_replaced(client: ApiClient) -> None:
    doomed = HollowFleet(client, ["a"], renew_seconds=0.2)
    healthy = HollowFleet(client, ["b"], renew_seconds=0.2)
    async with running(doomed.run(), healthy.run(), Scheduler(client).run(),
                       ReplicaSetController(client).run(),
                       NodeLifecycleController(client, grace=1.0, eviction_timeout=1.0,
                                               period=0.2).run()) as (doomed_task, *_):
        labels = {"app": "lost"}
        await client.create(REPLICASETS, "default", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "lost"},
            "spec": {"replicas": 4, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [{"name": "c", "image": "busybox"}]}}}})

        async def running_on(node: str) -> list[Obj]:
            pods = (await client.list(PODS, "default", label_selector="app=lost")).items
            return [p for p in pods if p["spec"].get("nodeName") == node
                    and (p.get("status") or {}).get("phase") == "Running"
                    and not p["metadata"].get("deletionTimestamp")]

        async def spread() -> bool:
            return len(await running_on("a")) == 2 and len(await running_on("b")) == 2

        await eventually(spread)
        doomed_task.cancel()  # node "a" dies: no more lease renewals, no kubelet
        await asyncio.gather(doomed_task, return_exceptions=True)

        async def unreachable() -> Obj | None:
            node = await client.get(NODES, "", "a")
            ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
            taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or ()}
            ok = ready[0]["status"] == "Unknown" and \
                (TAINT_UNREACHABLE, "NoExecute") in taints
            return node if ok else None

        await eventually(unreachable)

        async def moved() -> bool:
            return len(await running_on("b")) == 4

        await eventually(moved, timeout=20)
        assert await running_on("a") == []
        healthy_node = await client.get(NODES, "", "b")
        assert not healthy_node["spec"].get("taints")
