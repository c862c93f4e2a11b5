"""Three ``corral controller`` processes; kill -9 the leader in the middle of a rolling update:
the new leader finishes the rollout, no ReplicaSet is made twice, and an observer watching
every pod change sees the rollout's bounds hold throughout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from ctlharness import eventually
from labkit import leader_index

from controlplane.client import (
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    REPLICASETS,
    ApiClient,
    FuncHandler,
    Informer,
)
from controlplane.controllers.pods import pod_ready
from controlplane.localcluster import ControlPlane
from nodeagent.hollow import HollowFleet

pytestmark = pytest.mark.slow

Obj = dict[str, Any]
REPLICAS, MAX_SURGE, MAX_UNAVAILABLE, MIN_READY = 12, 3, 2, 2


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(3, fsync="none") as cp:
        yield cp


def deployment(image: str) -> Obj:
    labels = {"app": "web"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": REPLICAS, "minReadySeconds": MIN_READY,
                     "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                         "maxSurge": MAX_SURGE, "maxUnavailable": MAX_UNAVAILABLE}},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "main", "image": image,
                          "resources": {"requests": {"cpu": "100m"}}}]}}}}


class Bounds:
    """Checks, at every pod event, the bounds a rolling update promises: at most
    replicas + maxSurge pods that are neither terminating nor finished, and (once the first
    rollout was complete) at least replicas - maxUnavailable available pods."""

    def __init__(self, pods: Informer) -> None:
        self.pods = pods
        self.violations: list[str] = []
        self.checks = 0
        pods.add_handler(FuncHandler(self.check, lambda _old, _new: self.check(), self.check))

    def check(self, *_: Obj) -> None:
        self.checks += 1
        live = [p for p in self.pods.list()
                if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        available = [p for p in live if pod_ready(p, MIN_READY)]
        if len(live) > REPLICAS + MAX_SURGE:
            self.violations.append(f"{len(live)} pods > {REPLICAS} + {MAX_SURGE}")
        if len(available) < REPLICAS - MAX_UNAVAILABLE:
            self.violations.append(f"{len(available)} available < {REPLICAS} - "
                                   f"{MAX_UNAVAILABLE}")


async def test_rollout_completes_after_the_leader_is_killed(control_plane: ControlPlane) -> None:
    cp = control_plane
    ns = f"failover-{uuid.uuid4().hex[:6]}"
    async with ApiClient(cp.urls, cp.ssl_context()) as client:
        fleet = HollowFleet(client, [f"node-{i}" for i in range(4)])
        tasks = [asyncio.create_task(fleet.run())]
        try:
            await client.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": ns}})
            await client.create(DEPLOYMENTS, ns, deployment("busybox:1.36"))

            async def rolled_out(generation: int) -> Obj | None:
                d = await client.get(DEPLOYMENTS, ns, "web")
                status = d.get("status") or {}
                done = (status.get("observedGeneration", 0) >= generation
                        and status.get("updatedReplicas") == REPLICAS
                        and status.get("replicas") == REPLICAS
                        and status.get("availableReplicas") == REPLICAS)
                return d if done else None

            await eventually(lambda: rolled_out(1), timeout=60)
            pods = Informer(client, PODS, namespace=ns)
            tasks.append(asyncio.create_task(pods.run()))
            await pods.synced.wait()
            bounds = Bounds(pods)  # from a full cache on: the first list adds pods one by one

            await client.patch(DEPLOYMENTS, ns, "web", {"spec": {"template": {"spec": {
                "containers": [{"name": "main", "image": "busybox:1.37"}]}}}},
                patch_type="strategic")

            async def midway() -> bool:
                status = (await client.get(DEPLOYMENTS, ns, "web")).get("status") or {}
                return 3 <= status.get("updatedReplicas", 0) < REPLICAS

            await eventually(midway, timeout=60)
            leader = await asyncio.to_thread(leader_index, cp)
            cp.kill(leader)
            final = await eventually(lambda: rolled_out(2), timeout=120)
            successor = await asyncio.to_thread(leader_index, cp, skip=frozenset({leader}))
            assert successor != leader

            sets = (await client.list(REPLICASETS, ns)).items
            images = sorted((rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
                             rs["spec"]["template"]["spec"]["containers"][0]["image"],
                             rs["spec"]["replicas"]) for rs in sets)
            assert images == [("1", "busybox:1.36", 0), ("2", "busybox:1.37", REPLICAS)]
            assert final["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
            live = [p for p in pods.list() if not p["metadata"].get("deletionTimestamp")]
            assert sorted(p["spec"]["containers"][0]["image"] for p in live) == \
                ["busybox:1.37"] * REPLICAS
            assert bounds.checks > REPLICAS and bounds.violations == []
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
