"""A node is lost under three ``corral controller`` processes started with short
``--node-monitor-grace-period`` and ``--default-unreachable-toleration-seconds``: it turns
NotReady with the unreachable taints, its pods are evicted and replaced on the nodes left."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from ctlharness import eventually

from controlplane.client import DEPLOYMENTS, NAMESPACES, NODES, PODS, ApiClient
from controlplane.localcluster import ControlPlane
from nodeagent.hollow import HollowFleet

pytestmark = pytest.mark.slow

Obj = dict[str, Any]
GRACE, TOLERATION = 3, 2


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(3, fsync="none", extra_args=(
            "--node-monitor-grace-period", str(GRACE),
            "--default-unreachable-toleration-seconds", str(TOLERATION))) as cp:
        yield cp


def _ready(node: Obj) -> str | None:
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status")
    return None


async def test_lost_node_pods_are_replaced_elsewhere(control_plane: ControlPlane) -> None:
    cp = control_plane
    ns = f"loss-{uuid.uuid4().hex[:6]}"
    async with ApiClient(cp.urls, cp.ssl_context()) as client:
        doomed = HollowFleet(client, ["doomed"], renew_seconds=0.5)
        healthy = HollowFleet(client, ["stays-0", "stays-1"], renew_seconds=0.5)
        tasks = {name: asyncio.create_task(fleet.run())
                 for name, fleet in (("doomed", doomed), ("healthy", healthy))}
        try:
            await client.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": ns}})
            labels = {"app": "spread"}
            await client.create(DEPLOYMENTS, ns, {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread"},
                "spec": {"replicas": 6, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                             {"name": "c", "image": "busybox",
                              "resources": {"requests": {"cpu": "100m"}}}]}}}})

            async def placed() -> list[Obj] | None:
                pods = (await client.list(PODS, ns)).items
                running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
                return running if len(running) == 6 else None

            before = await eventually(placed, timeout=60)
            victims = {p["metadata"]["name"] for p in before if p["spec"]["nodeName"] == "doomed"}
            assert victims, "the scheduler spreads replicas: some land on every node"

            tasks.pop("doomed").cancel()  # the node dies: no more lease renewals, no kubelet

            async def tainted() -> Obj | None:
                node = await client.get(NODES, "", "doomed")
                keys = {t["key"] for t in (node.get("spec") or {}).get("taints") or ()}
                return node if _ready(node) == "Unknown" and \
                    "node.kubernetes.io/unreachable" in keys else None

            await eventually(tainted, timeout=30)

            async def replaced() -> bool:
                pods = (await client.list(PODS, ns)).items
                live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
                gone = victims - {p["metadata"]["name"] for p in live}
                running = [p for p in live if (p.get("status") or {}).get("phase") == "Running"
                           and p["spec"]["nodeName"] != "doomed"]
                return gone == victims and len(running) == 6

            await eventually(replaced, timeout=60)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
