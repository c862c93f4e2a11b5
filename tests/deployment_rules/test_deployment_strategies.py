"""The strategies over a ``Rollout`` whose ``RolloutIO`` is an in-memory fake: what one pass
writes, decided without an API server (rolling.go's and recreate.go's steps)."""

from __future__ import annotations

import copy
import itertools
from datetime import datetime, timezone
from typing import Any

import pytest

from controlplane.client import AlreadyExists
from controlplane.client.rest import failure
from controlplane.controllers.deployment import Rollout, Superseded, recreate, rolling

Obj = dict[str, Any]
NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
READY = {"phase": "Running", "conditions": [
    {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T11:00:00Z"}]}


def _merge(target: Obj, patch: Obj) -> Obj:
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeIO:
    """``RolloutIO`` over a dict of objects by name, resourceVersions counted, CAS enforced."""

    def __init__(self, *objects: Obj) -> None:
        self.revision = itertools.count(100)
        self.objects = {o["metadata"]["name"]: o for o in objects}
        self.writes: list[tuple[str, str, Any]] = []
        self.events: list[tuple[str, str]] = []

    def _store(self, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(next(self.revision))
        self.objects[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    def _current(self, obj: Obj) -> Obj:
        current = self.objects.get(obj["metadata"]["name"])
        if current is None or current["metadata"]["resourceVersion"] != \
                obj["metadata"]["resourceVersion"]:
            raise Superseded(obj["metadata"]["name"])
        return current

    async def create_replica_set(self, deployment: Obj, rs: Obj) -> Obj:
        name = rs["metadata"]["name"]
        if name in self.objects:
            raise AlreadyExists(failure(409, f"{name} exists", "AlreadyExists"))
        self.writes.append(("create", name, rs["spec"]["replicas"]))
        created = _merge(rs, {"metadata": {"uid": f"uid-{name}",
                                           "creationTimestamp": "2024-01-01T12:00:00Z"}})
        return self._store(created)

    async def get_replica_set(self, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.objects.get(name))

    async def patch_replica_set(self, deployment: Obj, rs: Obj, patch: Obj) -> Obj:
        current = self._current(rs)
        self.writes.append(("patch", rs["metadata"]["name"], patch.get("spec")))
        return self._store(_merge(current, patch))

    async def delete_replica_set(self, deployment: Obj, rs: Obj) -> None:
        self._current(rs)
        self.writes.append(("delete", rs["metadata"]["name"], None))
        del self.objects[rs["metadata"]["name"]]

    async def patch_deployment(self, deployment: Obj, patch: Obj) -> Obj:
        return self._store(_merge(self._current(deployment), patch))

    async def write_status(self, deployment: Obj, status: Obj) -> Obj:
        self.writes.append(("status", deployment["metadata"]["name"], None))
        return self._store({**self._current(deployment), "status": status})

    async def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        self.events.append((reason, message))


def template(image: str) -> Obj:
    return {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "main", "image": image}]}}


def deployment(image: str, replicas: int, strategy: str = "RollingUpdate") -> Obj:
    rollout: Obj = {"type": strategy}
    if strategy == "RollingUpdate":
        rollout["rollingUpdate"] = {"maxSurge": 3, "maxUnavailable": 2}
    return {"metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 2,
                         "resourceVersion": "1", "annotations": {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": template(image), "strategy": rollout,
                     "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10},
            "status": {}}


def replica_set(name: str, image: str, replicas: int, *, revision: int = 1) -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                         "resourceVersion": "2", "creationTimestamp": "2024-01-01T10:00:00Z",
                         "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                         "ownerReferences": [{"kind": "Deployment", "uid": "d-uid",
                                              "controller": True, "name": "web"}]},
            "spec": {"replicas": replicas, "template": template(image)},
            "status": {"replicas": replicas, "readyReplicas": replicas,
                       "availableReplicas": replicas}}


def pods(rs: Obj, n: int, status: Obj | None = None) -> list[Obj]:
    return [{"metadata": {"name": f"{rs['metadata']['name']}-{i}"},
             "status": copy.deepcopy(status if status is not None else READY)}
            for i in range(n)]


def rollout(d: Obj, old: list[Obj], io: FakeIO, new: Obj | None = None,
            pod_map: dict[str, list[Obj]] | None = None) -> Rollout:
    pod_map = pod_map if pod_map is not None else {
        rs["metadata"]["uid"]: pods(rs, rs["spec"]["replicas"]) for rs in old}
    return Rollout(deployment=d, new_rs=new, old_rss=old, pods=pod_map, io=io, now=NOW)


async def test_rolling_first_pass_creates_the_new_set_within_the_surge() -> None:
    d = deployment("v2", 10)
    old = replica_set("web-old", "v1", 10)
    io = FakeIO(d, old)
    r = rollout(d, [old], io)
    await rolling.rollout(r)
    created = [w for w in io.writes if w[0] == "create"]
    assert len(created) == 1 and created[0][2] == 3  # 10 + surge 3 - 10 running
    assert r.new_rs is not None and r.new_rs["metadata"]["name"].startswith("web-")
    assert ("ScalingReplicaSet", f"Scaled up replica set {r.new_rs['metadata']['name']} to 3") \
        in io.events
    # old ones may go too: 10 available, 8 needed; the new set's 3 are not available yet,
    # which uses up maxUnavailable (13 - 8 - 3 = 2 may go, all of them available ones)
    assert ("patch", "web-old", {"replicas": 8}) in io.writes
    assert io.writes[-1][0] == "status"
    assert r.deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


async def test_rolling_waits_while_new_pods_are_unavailable() -> None:
    d = deployment("v2", 10)
    old = replica_set("web-old", "v1", 8)
    io = FakeIO(d, old)
    r = rollout(d, [old], io)
    new = await r.ensure_new_replica_set(replicas=5)
    io.writes.clear()
    r2 = rollout(r.deployment, [io.objects["web-old"]], io, new=io.objects[new["metadata"]["name"]],
                 pod_map={old["metadata"]["uid"]: pods(old, 8),
                          new["metadata"]["uid"]: pods(new, 5, {"phase": "Pending"})})
    await rolling.rollout(r2)
    assert [w[0] for w in io.writes] == ["status"]  # 8 + 5 = 13 pods; 8 available: no move


async def test_recreate_scales_down_then_waits_for_old_pods() -> None:
    d = deployment("v2", 3, strategy="Recreate")
    old = replica_set("web-old", "v1", 3)
    io = FakeIO(d, old)
    await recreate.rollout(rollout(d, [old], io))
    assert [w for w in io.writes if w[0] != "status"] == [("patch", "web-old", {"replicas": 0})]

    # scaled to 0, but one pod still terminating: nothing new yet
    io.writes.clear()
    old = {**io.objects["web-old"], "status": {"replicas": 0}}
    terminating = pods(old, 1, {"phase": "Running"})
    terminating[0]["metadata"]["deletionTimestamp"] = "2024-01-01T12:00:00Z"
    await recreate.rollout(rollout(io.objects["web"], [old], io,
                                   pod_map={old["metadata"]["uid"]: terminating}))
    assert [w[0] for w in io.writes if w[0] != "status"] == []

    # gone: the new ReplicaSet at full size at once
    io.writes.clear()
    await recreate.rollout(rollout(io.objects["web"], [old], io, pod_map={}))
    assert [w for w in io.writes if w[0] == "create"][0][2] == 3


async def test_a_stale_snapshot_ends_the_pass() -> None:
    d = deployment("v2", 10)
    old = replica_set("web-old", "v1", 10)
    io = FakeIO(d, old)
    stale = copy.deepcopy(d)
    await io.patch_deployment(d, {"spec": {"replicas": 4}})  # someone changed it meanwhile
    with pytest.raises(Superseded):
        await rolling.rollout(rollout(stale, [old], io))
    assert not [w for w in io.writes if w[0] == "create"]  # nothing created from a stale view


async def test_a_failed_create_leaves_the_deployment_revision_alone() -> None:
    """The Deployment's revision follows the new ReplicaSet's creation: a create that fails
    (other than AlreadyExists) leaves it at the newest ReplicaSet's, the guard still a
    compare-and-swap."""
    from controlplane.client import ApiError

    class FailingIO(FakeIO):
        async def create_replica_set(self, deployment: Obj, rs: Obj) -> Obj:
            raise ApiError(failure(500, "etcd is down", "InternalError"))

    d = deployment("v2", 10)
    d["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    old = replica_set("web-old", "v1", 10)
    io = FailingIO(d, old)
    r = rollout(d, [old], io)
    with pytest.raises(ApiError):
        await r.ensure_new_replica_set()
    assert io.objects["web"]["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"] == "1"
