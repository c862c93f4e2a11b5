"""The garbage collector against an in-process API server: background, foreground and orphan
propagation, dangling references, and a collector started after the deletes it must finish."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ctlharness import eventually, running

from controlplane.api.resources import RESOURCES
from controlplane.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NODES,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVED,
    ApiClient,
    NotFound,
    Resource,
)
from controlplane.controllers.garbagecollector import GarbageCollector

Obj = dict[str, Any]
HOLD = "example.com/hold"


@asynccontextmanager
async def collector(client: ApiClient) -> AsyncIterator[GarbageCollector]:
    gc = GarbageCollector(client)
    async with running(gc.run()):
        yield gc


def ref(owner: Obj, *, block: bool = True, controller: bool = True) -> Obj:
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
            "uid": meta["uid"], "controller": controller, "blockOwnerDeletion": block}


def pod(name: str, *refs: Obj, finalizers: tuple[str, ...] = ()) -> Obj:
    meta: Obj = {"name": name, "ownerReferences": list(refs)}
    if finalizers:
        meta["finalizers"] = list(finalizers)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def configmap(name: str, *refs: Obj, finalizers: tuple[str, ...] = ()) -> Obj:
    meta: Obj = {"name": name, "ownerReferences": list(refs)}
    if finalizers:
        meta["finalizers"] = list(finalizers)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def replicaset(name: str, *refs: Obj) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "ownerReferences": list(refs)},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def deployment(name: str) -> Obj:
    rs = replicaset(name)
    return {**rs, "kind": "Deployment", "metadata": {"name": name}}


async def exists(client: ApiClient, res: Resource, name: str, namespace: str = "default"
                 ) -> Obj | None:
    try:
        return await client.get(res, namespace, name)
    except NotFound:
        return None


def gone(client: ApiClient, res: Resource, name: str,
         namespace: str = "default") -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await exists(client, res, name, namespace) is None
    return check


async def release(client: ApiClient, res: Resource, name: str) -> None:
    """Remove the test's own finalizer, as its (imaginary) controller would."""
    await client.patch(res, "default", name, {"metadata": {"finalizers": None}})


def test_watches_every_served_resource() -> None:
    assert {(r.group, r.plural, r.kind, r.namespaced) for r in SERVED} == \
        {(r.group, r.plural, r.kind, r.namespaced) for r in RESOURCES}


async def test_background_deletion_collects_dependents(client: ApiClient) -> None:
    async with collector(client):
        rs = await client.create(REPLICASETS, "default", replicaset("web"))
        for i in range(3):
            await client.create(PODS, "default", pod(f"web-{i}", ref(rs)))
        kept = await client.create(PODS, "default", pod("unowned"))
        await client.delete(REPLICASETS, "default", "web")
        for i in range(3):
            await eventually(gone(client, PODS, f"web-{i}"))
        assert await exists(client, PODS, "unowned") == kept


async def test_foreground_owner_waits_for_blocking_dependents(client: ApiClient) -> None:
    async with collector(client):
        owner = await client.create(DEPLOYMENTS, "default", deployment("fg"))
        await client.create(PODS, "default", pod("blocker", ref(owner), finalizers=(HOLD,)))
        await client.create(CONFIGMAPS, "default", configmap("loose", ref(owner, block=False)))
        await client.delete(DEPLOYMENTS, "default", "fg", propagation="Foreground")
        await eventually(gone(client, CONFIGMAPS, "loose"))

        async def blocker_deleting() -> bool:
            got = await exists(client, PODS, "blocker")
            return bool(got and got["metadata"].get("deletionTimestamp"))
        await eventually(blocker_deleting)
        await asyncio.sleep(0.3)
        held = await exists(client, DEPLOYMENTS, "fg")
        assert held is not None and held["metadata"]["deletionTimestamp"]
        assert held["metadata"]["finalizers"] == ["foregroundDeletion"]
        await release(client, PODS, "blocker")
        await eventually(gone(client, PODS, "blocker"))
        await eventually(gone(client, DEPLOYMENTS, "fg"))


async def test_foreground_deletion_of_owners_in_a_cycle_finishes(client: ApiClient) -> None:
    """a owns b and b owns a, both blocking: deleting a in foreground must not leave each
    waiting for the other (Kubernetes unblocks the dependent's references)."""
    async with collector(client):
        a = await client.create(CONFIGMAPS, "default", configmap("cycle-a"))
        b = await client.create(CONFIGMAPS, "default", configmap("cycle-b", ref(a)))
        a["metadata"]["ownerReferences"] = [ref(b)]
        await client.update(CONFIGMAPS, a)
        await client.delete(CONFIGMAPS, "default", "cycle-a", propagation="Foreground")
        await eventually(gone(client, CONFIGMAPS, "cycle-a"))
        await eventually(gone(client, CONFIGMAPS, "cycle-b"))


async def test_non_blocking_dependents_do_not_hold_a_foreground_owner(
        client: ApiClient) -> None:
    async with collector(client):
        owner = await client.create(DEPLOYMENTS, "default", deployment("nb"))
        await client.create(CONFIGMAPS, "default",
                            configmap("slow", ref(owner, block=False), finalizers=(HOLD,)))
        await client.delete(DEPLOYMENTS, "default", "nb", propagation="Foreground")
        await eventually(gone(client, DEPLOYMENTS, "nb"))
        lingering = await exists(client, CONFIGMAPS, "slow")
        assert lingering is not None and lingering["metadata"]["deletionTimestamp"]
        await release(client, CONFIGMAPS, "slow")
        await eventually(gone(client, CONFIGMAPS, "slow"))


async def test_foreground_deletion_recurses_through_owners_of_owners(client: ApiClient) -> None:
    async with collector(client):
        top = await client.create(DEPLOYMENTS, "default", deployment("top"))
        middle = await client.create(REPLICASETS, "default", replicaset("middle", ref(top)))
        await client.create(PODS, "default", pod("leaf", ref(middle), finalizers=(HOLD,)))
        await client.delete(DEPLOYMENTS, "default", "top", propagation="Foreground")

        async def middle_in_foreground() -> bool:
            got = await exists(client, REPLICASETS, "middle")
            return bool(got and "foregroundDeletion" in (got["metadata"].get("finalizers") or ()))
        await eventually(middle_in_foreground)
        await asyncio.sleep(0.3)
        assert await exists(client, DEPLOYMENTS, "top") is not None
        await release(client, PODS, "leaf")
        for res, name in ((PODS, "leaf"), (REPLICASETS, "middle"), (DEPLOYMENTS, "top")):
            await eventually(gone(client, res, name))


async def test_orphaned_dependents_live_on_without_the_reference(client: ApiClient) -> None:
    async with collector(client):
        owner = await client.create(DEPLOYMENTS, "default", deployment("orph"))
        other = await client.create(SECRETS, "default", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other"}})
        await client.create(PODS, "default", pod("solo", ref(owner)))
        await client.create(CONFIGMAPS, "default",
                            configmap("shared", ref(owner), ref(other, controller=False)))
        await client.delete(DEPLOYMENTS, "default", "orph", propagation="Orphan")
        await eventually(gone(client, DEPLOYMENTS, "orph"))
        solo = await exists(client, PODS, "solo")
        shared = await exists(client, CONFIGMAPS, "shared")
        assert solo is not None and "ownerReferences" not in solo["metadata"]
        assert shared is not None
        assert [r["uid"] for r in shared["metadata"]["ownerReferences"]] == \
            [other["metadata"]["uid"]]


async def test_dangling_references_found_after_a_restart(client: ApiClient) -> None:
    live = await client.create(DEPLOYMENTS, "default", deployment("live"))
    dead = {**deployment("dead"), "metadata": {"name": "dead", "uid": str(uuid.uuid4())}}
    replaced = await client.create(DEPLOYMENTS, "default", deployment("replaced"))
    await client.create(PODS, "default", pod("of-dead", ref(dead)))
    await client.create(PODS, "default", pod("of-replaced", ref(replaced)))
    await client.create(CONFIGMAPS, "default",
                        configmap("half", ref(live), ref(dead, controller=False)))
    # The owner of "of-replaced" is deleted and made again: same name, another uid.
    await client.delete(DEPLOYMENTS, "default", "replaced")
    await client.create(DEPLOYMENTS, "default", deployment("replaced"))
    async with collector(client):
        await eventually(gone(client, PODS, "of-dead"))
        await eventually(gone(client, PODS, "of-replaced"))

        async def only_live_ref() -> bool:
            half = await exists(client, CONFIGMAPS, "half")
            assert half is not None
            return [r["uid"] for r in half["metadata"]["ownerReferences"]] == \
                [live["metadata"]["uid"]]
        await eventually(only_live_ref)
        assert await exists(client, DEPLOYMENTS, "replaced") is not None


async def test_cluster_scoped_owner_and_namespaced_dependents(client: ApiClient) -> None:
    node = await client.create(NODES, "", {"apiVersion": "v1", "kind": "Node",
                                           "metadata": {"name": "n1"}})
    await client.create(PODS, "default", pod("on-node", ref(node, controller=False)))
    await client.create(CONFIGMAPS, "kube-system", configmap("node-conf", ref(node)))
    async with collector(client):
        await asyncio.sleep(0.3)
        assert await exists(client, PODS, "on-node") is not None
        await client.delete(NODES, "", "n1")
        await eventually(gone(client, PODS, "on-node"))
        await eventually(gone(client, CONFIGMAPS, "node-conf", "kube-system"))


async def test_a_collector_started_after_the_deletes_finishes_them(client: ApiClient) -> None:
    """The leader died mid-GC: nothing was kept in memory, the next one finds the work."""
    owners = {}
    for policy in ("Background", "Foreground", "Orphan"):
        name = policy.lower()
        owners[policy] = await client.create(DEPLOYMENTS, "default", deployment(name))
        await client.create(PODS, "default", pod(f"{name}-pod", ref(owners[policy])))
        await client.delete(DEPLOYMENTS, "default", name, propagation=policy)
    assert await exists(client, DEPLOYMENTS, "background") is None
    for name in ("foreground", "orphan"):
        assert (await exists(client, DEPLOYMENTS, name))["metadata"]["deletionTimestamp"]
    async with collector(client):
        await eventually(gone(client, PODS, "background-pod"))
        await eventually(gone(client, PODS, "foreground-pod"))
        await eventually(gone(client, DEPLOYMENTS, "foreground"))
        await eventually(gone(client, DEPLOYMENTS, "orphan"))
        orphan = await exists(client, PODS, "orphan-pod")
        assert orphan is not None and "ownerReferences" not in orphan["metadata"]


async def test_references_it_cannot_resolve_are_left_alone(client: ApiClient) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w",
              "uid": str(uuid.uuid4())}
    await client.create(PODS, "default", pod("of-widget", widget))
    owner = await client.create(DEPLOYMENTS, "default", deployment("ns-owner"))
    # A cluster-scoped object cannot name a namespaced owner: Kubernetes leaves it alone.
    await client.create(NODES, "", {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "n2", "ownerReferences": [ref(owner)]}})
    await client.delete(DEPLOYMENTS, "default", "ns-owner")
    async with collector(client):
        await asyncio.sleep(0.5)
        assert await exists(client, PODS, "of-widget") is not None
        assert await exists(client, NODES, "n2", "") is not None
