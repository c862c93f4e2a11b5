"""The ReplicaSet controller against an in-process API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from ctlharness import eventually, running

from controlplane.client import PODS, REPLICASETS, ApiClient
from controlplane.controllers.replicaset import ReplicaSetController

Obj = dict[str, Any]


def replicaset(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


@pytest.fixture
async def controller(client: ApiClient) -> AsyncIterator[None]:
    async with running(ReplicaSetController(client).run()):
        yield



async def active_pods(client: ApiClient, app: str) -> list[Obj]:
    pods = await client.list(PODS, "default", label_selector=f"app={app}")
    return [p for p in pods.items if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]


def count_is(client: ApiClient, app: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await active_pods(client, app)) == n
    return check


async def test_keeps_the_count(client: ApiClient, controller: None) -> None:
    rs = await client.create(REPLICASETS, "default", replicaset("web", 3))
    await eventually(count_is(client, "web", 3))
    pods = await active_pods(client, "web")
    for pod in pods:
        ref = pod["metadata"]["ownerReferences"][0]
        assert ref["uid"] == rs["metadata"]["uid"] and ref["controller"] is True
    await client.delete(PODS, "default", pods[0]["metadata"]["name"])
    await eventually(count_is(client, "web", 3))
    failed = (await active_pods(client, "web"))[0]
    await client.patch(PODS, "default", failed["metadata"]["name"],
                       {"status": {"phase": "Failed"}}, subresource="status")
    await eventually(count_is(client, "web", 3))
    await asyncio.sleep(0.5)
    assert len(await active_pods(client, "web")) == 3  # and not more

    async def status_replicas() -> bool:
        got = await client.get(REPLICASETS, "default", "web")
        return (got.get("status") or {}).get("replicas") == 3
    await eventually(status_replicas)


async def test_scales_down_and_up(client: ApiClient, controller: None) -> None:
    await client.create(REPLICASETS, "default", replicaset("s", 5))
    await eventually(count_is(client, "s", 5))
    await client.patch(REPLICASETS, "default", "s", {"spec": {"replicas": 2}})
    await eventually(count_is(client, "s", 2))
    await client.patch(REPLICASETS, "default", "s", {"spec": {"replicas": 4}})
    await eventually(count_is(client, "s", 4))
    await asyncio.sleep(0.5)
    assert len(await active_pods(client, "s")) == 4


async def test_adopts_matching_orphans_and_releases_strays(
        client: ApiClient, controller: None) -> None:
    orphan = replicaset("a", 1)["spec"]["template"]
    await client.create(PODS, "default", {"apiVersion": "v1", "kind": "Pod",
                                          "metadata": {"name": "orphan", **orphan["metadata"]},
                                          "spec": orphan["spec"]})
    rs = await client.create(REPLICASETS, "default", replicaset("a", 1))

    async def adopted() -> bool:
        pod = await client.get(PODS, "default", "orphan")
        refs = pod["metadata"].get("ownerReferences") or []
        return bool(refs) and refs[0]["uid"] == rs["metadata"]["uid"]
    await eventually(adopted)
    await asyncio.sleep(0.3)
    assert len(await active_pods(client, "a")) == 1  # adopted, so none created
    await client.patch(PODS, "default", "orphan", {"metadata": {"labels": {"app": "other"}}})

    async def released() -> bool:
        pod = await client.get(PODS, "default", "orphan")
        return not pod["metadata"].get("ownerReferences")
    await eventually(released)
    await eventually(count_is(client, "a", 1))
