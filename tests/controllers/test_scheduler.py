"""The scheduler loop against an in-process API server: binds, spreads, waits, retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ctlharness import eventually, running

from controlplane.client import EVENTS, NODES, PODS, ApiClient
from controlplane.controllers.scheduler import Scheduler

Obj = dict[str, Any]


def node(name: str, cpu: str = "2", memory: str = "4Gi", ready: bool = True) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "conditions": [{"type": "Ready",
                                       "status": "True" if ready else "False"}]}}


def pod(name: str, cpu: str = "100m", owner: str | None = None) -> Obj:
    meta: Obj = {"name": name}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                    "name": "rs", "uid": owner, "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": cpu}}}]}}


@pytest.fixture
async def scheduler(client: ApiClient) -> AsyncIterator[None]:
    async with running(Scheduler(client).run()):
        yield



async def node_of(client: ApiClient, name: str) -> str | None:
    return (await client.get(PODS, "default", name))["spec"].get("nodeName")


async def test_pods_are_bound_and_spread(client: ApiClient, scheduler: None) -> None:
    for name in ("n1", "n2", "n3"):
        await client.create(NODES, "", node(name))
    for i in range(6):
        await client.create(PODS, "default", pod(f"p{i}", owner="rs-uid"))

    async def all_bound() -> list[str] | None:
        nodes = [await node_of(client, f"p{i}") for i in range(6)]
        return nodes if all(nodes) else None

    placed = await eventually(all_bound)
    assert sorted(placed) == ["n1", "n1", "n2", "n2", "n3", "n3"]
    events = await client.list(EVENTS, "default", field_selector="reason=Scheduled")
    assert len(events.items) == 6


async def test_unschedulable_pod_waits_for_a_node(client: ApiClient, scheduler: None) -> None:
    await client.create(NODES, "", node("small", cpu="1"))
    await client.create(NODES, "", node("down", cpu="64", ready=False))
    await client.create(PODS, "default", pod("big", cpu="8"))

    async def refused() -> Obj | None:
        got = await client.get(PODS, "default", "big")
        conditions = (got.get("status") or {}).get("conditions") or ()
        return next((c for c in conditions if c["type"] == "PodScheduled"
                     and c["status"] == "False"), None)

    condition = await eventually(refused)
    assert condition["reason"] == "Unschedulable"
    assert condition["message"].startswith("0/2 nodes are available: ")
    assert "1 Insufficient cpu" in condition["message"]
    failed = await client.list(EVENTS, "default", field_selector="reason=FailedScheduling")
    assert failed.items and failed.items[0]["type"] == "Warning"
    assert await node_of(client, "big") is None
    await client.create(NODES, "", node("large", cpu="16"))

    async def bound() -> str | None:
        return await node_of(client, "big")

    assert await eventually(bound) == "large"


async def test_assumed_pods_count_before_the_watch_sees_them(
        client: ApiClient, scheduler: None) -> None:
    await client.create(NODES, "", node("a", cpu="1"))
    await client.create(NODES, "", node("b", cpu="1"))
    for i in range(4):
        await client.create(PODS, "default", pod(f"half{i}", cpu="500m"))

    async def all_bound() -> list[str] | None:
        nodes = [await node_of(client, f"half{i}") for i in range(4)]
        return nodes if all(nodes) else None

    assert sorted(await eventually(all_bound)) == ["a", "a", "b", "b"]


async def test_an_assumed_pod_deleted_before_the_watch_showed_it_bound_is_forgotten() -> None:
    """The bind went through, then the pod was deleted, and the informer relisted without
    ever showing it bound: the node must not keep holding the pod's requests."""
    from controlplane.client import InformerFactory

    class Binder:
        async def bind(self, namespace: str, name: str, node: str, *, uid: str = "") -> None:
            return None

    informers = InformerFactory(Binder())  # type: ignore[arg-type]
    scheduler = Scheduler(Binder(), informers=informers)  # type: ignore[arg-type]
    nodes, pods = informers.informer(NODES), informers.informer(PODS)
    # The informers' own entry points for a watch event and a relist.
    nodes._apply("ADDED", {**node("n1", cpu="1"), "metadata": {"name": "n1",
                                                                 "resourceVersion": "1"}})
    pending = pod("p", cpu="800m")
    pending["metadata"].update(namespace="default", uid="u1", resourceVersion="2")
    pods._apply("ADDED", pending)
    await scheduler.reconcile("default/p")
    for _ in range(10):
        await asyncio.sleep(0)  # the binding task runs
    info = scheduler._infos["n1"]
    assert info.requested_milli_cpu == 800
    pods._replace([])
    assert info.requested_milli_cpu == 0 and not info.pods
