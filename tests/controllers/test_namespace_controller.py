"""The namespace controller against an in-process API server: a deleted namespace is emptied,
waits for what lingers, is finalized and goes; a namespace made again under the same name is
left alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ctlharness import eventually, running

from controlplane.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    LEASES,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICEACCOUNTS,
    ApiClient,
    NotFound,
)
from controlplane.controllers.namespace import NamespaceController

Obj = dict[str, Any]
HOLD = "example.com/hold"


@asynccontextmanager
async def namespace_controller(client: ApiClient) -> AsyncIterator[NamespaceController]:
    controller = NamespaceController(client)
    async with running(controller.run()):
        yield controller


def namespace(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def configmap(name: str, **meta: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}}


async def get_namespace(client: ApiClient, name: str) -> Obj | None:
    try:
        return await client.get(NAMESPACES, "", name)
    except NotFound:
        return None


async def fill(client: ApiClient, ns: str) -> None:
    """One object of several kinds, a pod bound to a node (deleted gracefully, as its agent
    would confirm) and a configmap held by a finalizer."""
    await client.create(NAMESPACES, "", namespace(ns))
    await client.create(CONFIGMAPS, ns, configmap("plain"))
    await client.create(CONFIGMAPS, ns, configmap("held", finalizers=[HOLD]))
    await client.create(SECRETS, ns, {"apiVersion": "v1", "kind": "Secret",
                                      "metadata": {"name": "s"}})
    await client.create(SERVICEACCOUNTS, ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                                              "metadata": {"name": "default"}})
    await client.create(LEASES, ns, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": "l"}, "spec": {}})
    await client.create(DEPLOYMENTS, ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    await client.create(PODS, ns, pod("loose"))
    await client.create(PODS, ns, pod("bound"))
    await client.bind(ns, "bound", "n1")


def conditions(ns: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (ns.get("status") or {}).get("conditions") or ()}


async def left_in(client: ApiClient, ns: str) -> list[str]:
    names = []
    for res in (CONFIGMAPS, SECRETS, SERVICEACCOUNTS, LEASES, DEPLOYMENTS, PODS):
        names += [f"{res.plural}/{o['metadata']['name']}"
                  for o in (await client.list(res, ns)).items]
    return sorted(names)


async def test_deleting_a_namespace_deletes_everything_in_it_then_it(client: ApiClient) -> None:
    await fill(client, "team")
    async with namespace_controller(client):
        await client.delete(NAMESPACES, "", "team")

        async def only_lingering_left() -> dict[str, Obj] | None:
            ns = await get_namespace(client, "team")
            assert ns is not None
            if await left_in(client, "team") != ["configmaps/held", "pods/bound"]:
                return None
            found = conditions(ns)
            return found if found.get("NamespaceFinalizersRemaining", {}).get(
                "status") == "True" else None
        found = await eventually(only_lingering_left)
        ns = await get_namespace(client, "team")
        assert ns is not None and ns["status"]["phase"] == "Terminating"
        assert ns["spec"]["finalizers"] == ["kubernetes"]
        remaining = found["NamespaceContentRemaining"]
        assert remaining["status"] == "True" and remaining["reason"] == "SomeResourcesRemain"
        assert "configmaps has 1 resource instances" in remaining["message"]
        assert "pods has 1 resource instances" in remaining["message"]
        assert f"{HOLD} in 1 resource instances" in \
            found["NamespaceFinalizersRemaining"]["message"]
        assert found["NamespaceDeletionContentFailure"]["status"] == "False"
        bound = await client.get(PODS, "team", "bound")
        assert bound["metadata"]["deletionGracePeriodSeconds"] == 30
        # The finalizer's owner lets go; the agent confirms the pod stopped.
        await client.patch(CONFIGMAPS, "team", "held", {"metadata": {"finalizers": None}})
        await client.delete(PODS, "team", "bound", grace_period=0)

        async def namespace_gone() -> bool:
            return await get_namespace(client, "team") is None
        await eventually(namespace_gone, timeout=5)
        assert await left_in(client, "team") == []


async def test_a_namespace_made_again_under_the_same_name_is_left_alone(
        client: ApiClient) -> None:
    await client.create(NAMESPACES, "", namespace("again"))
    await client.create(CONFIGMAPS, "again", configmap("old"))
    async with namespace_controller(client) as controller:
        await client.delete(NAMESPACES, "", "again")

        async def namespace_gone() -> bool:
            return await get_namespace(client, "again") is None
        await eventually(namespace_gone)
        await client.create(NAMESPACES, "", namespace("again"))
        await client.create(CONFIGMAPS, "again", configmap("new"))
        # A late pass for the old namespace (a parked key, a stale cache) finds the new one.
        await controller.reconcile("again")
        await asyncio.sleep(0.3)
        ns = await get_namespace(client, "again")
        assert ns is not None and ns["status"]["phase"] == "Active"
        assert not ns["metadata"].get("deletionTimestamp")
        assert await left_in(client, "again") == ["configmaps/new"]


async def test_a_controller_started_after_the_delete_finishes_it(client: ApiClient) -> None:
    await client.create(NAMESPACES, "", namespace("late"))
    await client.create(CONFIGMAPS, "late", configmap("x"))
    await client.delete(NAMESPACES, "", "late")
    await asyncio.sleep(0.3)
    ns = await get_namespace(client, "late")
    assert ns is not None and ns["status"]["phase"] == "Terminating"
    assert await left_in(client, "late") == ["configmaps/x"]
    async with namespace_controller(client):
        async def namespace_gone() -> bool:
            return await get_namespace(client, "late") is None
        await eventually(namespace_gone)
    assert await left_in(client, "late") == []
