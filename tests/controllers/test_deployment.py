"""The Deployment controller on hollow nodes with the scheduler and the ReplicaSet controller:
rolling updates within their bounds (checked at every pod change), Recreate, rollback, pause,
resizing mid-rollout, the progress deadline, revision history, adoption, and no duplicate
ReplicaSet when passes race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from ctlharness import eventually, running

from controlplane.client import (
    DEPLOYMENTS,
    EVENTS,
    PODS,
    REPLICASETS,
    ApiClient,
    FuncHandler,
    Informer,
    InformerFactory,
    Requeue,
)
from controlplane.controllers.deployment import (
    STRATEGIES,
    DeploymentController,
    Rollout,
    Superseded,
)
from controlplane.controllers.deployment.controller import _ApiIO
from controlplane.controllers.deployment.revisions import template_hash
from controlplane.controllers.pods import pod_ready
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.controllers.scheduler import Scheduler
from nodeagent.hollow import HollowFleet

Obj = dict[str, Any]
NS = "default"
REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"
#: A nodeSelector no hollow node has: pods of such a template stay Pending.
NOWHERE = {"disk": "none"}


def deployment(image: str, replicas: int, *, surge: object = 1, unavailable: object = 0,
               strategy: str = "RollingUpdate", node_selector: dict | None = None,
               **spec: Any) -> Obj:
    labels = {"app": "web"}
    pod_spec: Obj = {"containers": [{"name": "main", "image": image}]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    rollout: Obj = {"type": strategy}
    if strategy == "RollingUpdate":
        rollout["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "strategy": rollout,
                     "template": {"metadata": {"labels": labels}, "spec": pod_spec}, **spec}}


async def set_image(client: ApiClient, image: str, *, node_selector: dict | None = None) -> None:
    spec: Obj = {"containers": [{"name": "main", "image": image}]}
    spec["nodeSelector"] = node_selector  # None removes it
    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"template": {"spec": spec}}},
                       patch_type="strategic")


def image_of(obj: Obj) -> str:
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    return str(spec["containers"][0]["image"])


def active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


async def rolled_out(client: ApiClient, replicas: int) -> Obj | None:
    """The Deployment once its latest generation is rolled out (what `kubectl rollout
    status` waits for), else None."""
    d = await client.get(DEPLOYMENTS, NS, "web")
    status = d.get("status") or {}
    done = (status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == replicas
            and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas)
    return d if done else None


async def replica_sets(client: ApiClient) -> list[Obj]:
    sets = (await client.list(REPLICASETS, NS)).items
    return sorted(sets, key=lambda rs: int(rs["metadata"].get("annotations", {})
                                           .get(REVISION, 0)))


def condition(d: Obj, type_: str) -> Obj:
    return next(c for c in d["status"]["conditions"] if c["type"] == type_)


async def events(client: ApiClient) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in (await client.list(EVENTS, NS)).items
            if e["source"]["component"] == "deployment-controller"]


@pytest.fixture
async def cluster_loops(client: ApiClient) -> AsyncIterator[InformerFactory]:
    """Hollow nodes, the scheduler and the ReplicaSet and Deployment controllers, sharing
    informers as a leader's loops do."""
    informers = InformerFactory(client)
    fleet = HollowFleet(client, [f"hollow-{i}" for i in range(4)])
    async with running(fleet.run(), Scheduler(client, informers=informers).run(),
                       ReplicaSetController(client, informers=informers).run(),
                       DeploymentController(client, informers=informers).run()):
        yield informers


@pytest.fixture
async def pod_watch(client: ApiClient) -> AsyncIterator[Callable[[Callable[[list[Obj]], None]],
                                                                   None]]:
    """``watch(check)``: ``check(pods)`` runs with every pod of the namespace at each change."""
    pods = Informer(client, PODS, namespace=NS)

    def watch(check: Callable[[list[Obj]], None]) -> None:
        pods.add_handler(FuncHandler(lambda _: check(pods.list()),
                                     lambda _o, _n: check(pods.list()),
                                     lambda _: check(pods.list())))
    async with running(pods.run()):
        await pods.synced.wait()
        yield watch


class Bounds:
    """What a rolling update promises, checked on every pod change: at most replicas +
    maxSurge pods that are neither terminating nor finished, and at least replicas -
    maxUnavailable of them available."""

    def __init__(self, replicas: int, surge: int, unavailable: int, min_ready: int = 0) -> None:
        self.most, self.least, self.min_ready = replicas + surge, replicas - unavailable, min_ready
        self.checks = 0
        self.violations: list[str] = []
        self.peak = 0

    def __call__(self, pods: list[Obj]) -> None:
        self.checks += 1
        live = [p for p in pods if active(p)]
        available = [p for p in live if pod_ready(p, self.min_ready)]
        self.peak = max(self.peak, len(live))
        if len(live) > self.most:
            self.violations.append(f"{len(live)} pods > {self.most}")
        if len(available) < self.least:
            self.violations.append(f"{len(available)} available < {self.least}")


async def test_rolling_update_keeps_its_bounds(client: ApiClient, cluster_loops: None,
                                               pod_watch: Callable) -> None:
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 10, surge=3, unavailable=2))
    first = await eventually(lambda: rolled_out(client, 10))
    assert first["metadata"]["annotations"][REVISION] == "1"
    bounds = Bounds(10, 3, 2)
    pod_watch(bounds)

    await set_image(client, "app:v2")
    d = await eventually(lambda: rolled_out(client, 10))

    assert bounds.violations == [] and bounds.checks > 20
    assert bounds.peak > 10  # it did surge
    pods = [p for p in (await client.list(PODS, NS)).items if active(p)]
    assert sorted(image_of(p) for p in pods) == ["app:v2"] * 10
    old, new = await replica_sets(client)
    assert (image_of(old), old["spec"]["replicas"], old["metadata"]["annotations"][REVISION]) \
        == ("app:v1", 0, "1")
    assert (image_of(new), new["spec"]["replicas"], new["metadata"]["annotations"][REVISION]) \
        == ("app:v2", 10, "2")
    pod_hash = new["metadata"]["labels"][HASH]
    assert new["metadata"]["name"] == f"web-{pod_hash}"
    assert new["spec"]["selector"]["matchLabels"] == {"app": "web", HASH: pod_hash}
    assert all(p["metadata"]["labels"][HASH] == pod_hash for p in pods)
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "10"
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "13"
    assert d["metadata"]["annotations"][REVISION] == "2"
    status = d["status"]
    assert {k: status.get(k) for k in ("observedGeneration", "replicas", "updatedReplicas",
                                       "readyReplicas", "availableReplicas",
                                       "unavailableReplicas")} == {
        "observedGeneration": 2, "replicas": 10, "updatedReplicas": 10, "readyReplicas": 10,
        "availableReplicas": 10, "unavailableReplicas": None}
    available, progressing = condition(d, "Available"), condition(d, "Progressing")
    assert (available["status"], available["reason"], available["message"]) == \
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    assert (progressing["status"], progressing["reason"], progressing["message"]) == \
        ("True", "NewReplicaSetAvailable",
         f'ReplicaSet "{new["metadata"]["name"]}" has successfully progressed.')
    told = await events(client)
    assert ("ScalingReplicaSet",
            f"Scaled up replica set {old['metadata']['name']} to 10") in told
    assert ("ScalingReplicaSet",
            f"Scaled up replica set {new['metadata']['name']} to 3") in told
    assert ("ScalingReplicaSet",
            f"Scaled down replica set {old['metadata']['name']} from 10 to 8") in told


async def test_min_ready_seconds_holds_availability(client: ApiClient, cluster_loops: None,
                                                    pod_watch: Callable) -> None:
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3, surge=1, unavailable=0,
                                                    minReadySeconds=1))
    await eventually(lambda: rolled_out(client, 3))
    bounds = Bounds(3, 1, 0, min_ready=1)
    pod_watch(bounds)
    await set_image(client, "app:v2")
    await eventually(lambda: rolled_out(client, 3))
    assert bounds.violations == [] and bounds.checks > 5
    new = (await replica_sets(client))[-1]
    assert new["spec"]["minReadySeconds"] == 1


async def test_recreate_never_runs_old_and_new_together(client: ApiClient, cluster_loops: None,
                                                        pod_watch: Callable) -> None:
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 4, strategy="Recreate"))
    await eventually(lambda: rolled_out(client, 4))
    overlaps: list[str] = []
    seen_new = []

    def check(pods: list[Obj]) -> None:
        present = [p for p in pods if (p.get("status") or {}).get("phase")
                   not in ("Succeeded", "Failed")]  # terminating ones count
        new = [p for p in present if image_of(p) == "app:v2"]
        old = [p for p in present if image_of(p) == "app:v1"]
        if new:
            seen_new.append(len(new))
            if old:
                overlaps.append(f"{len(old)} old pods with {len(new)} new ones")

    pod_watch(check)
    await set_image(client, "app:v2")
    d = await eventually(lambda: rolled_out(client, 4))
    assert overlaps == [] and seen_new
    old, new = await replica_sets(client)
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 4)
    assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"


async def test_rollback_reuses_the_old_replica_set(client: ApiClient,
                                                   cluster_loops: None) -> None:
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3))
    await eventually(lambda: rolled_out(client, 3))
    await client.patch(DEPLOYMENTS, NS, "web", {"metadata": {"annotations": {
        "kubernetes.io/change-cause": "to v2"}}})
    await set_image(client, "app:v2")
    await eventually(lambda: rolled_out(client, 3))
    first, second = await replica_sets(client)
    assert second["metadata"]["annotations"]["kubernetes.io/change-cause"] == "to v2"

    # what `kubectl rollout undo` sends: the old ReplicaSet's template, hash label removed
    template = first["spec"]["template"]
    del template["metadata"]["labels"][HASH]
    await client.patch(DEPLOYMENTS, NS, "web", [
        {"op": "replace", "path": "/spec/template", "value": template}], patch_type="json")
    d = await eventually(lambda: rolled_out(client, 3))

    sets = await replica_sets(client)
    assert [rs["metadata"]["name"] for rs in sets] == \
        [second["metadata"]["name"], first["metadata"]["name"]]  # no third ReplicaSet
    back = sets[-1]
    assert back["metadata"]["annotations"][REVISION] == "3"
    assert back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert (back["spec"]["replicas"], sets[0]["spec"]["replicas"]) == (3, 0)
    assert d["metadata"]["annotations"][REVISION] == "3"
    pods = [p for p in (await client.list(PODS, NS)).items if active(p)]
    assert sorted(image_of(p) for p in pods) == ["app:v1"] * 3


async def test_paused_deployment_makes_no_replica_set_until_resumed(
        client: ApiClient, cluster_loops: None) -> None:
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3))
    await eventually(lambda: rolled_out(client, 3))
    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"paused": True}})
    await set_image(client, "app:v2")
    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"replicas": 5}})  # scaling still works

    async def observed_paused() -> Obj | None:
        d = await client.get(DEPLOYMENTS, NS, "web")
        status = d.get("status") or {}
        ok = status.get("observedGeneration") == d["metadata"]["generation"] and \
            status.get("availableReplicas") == 5
        return d if ok else None

    d = await eventually(observed_paused)
    progressing = condition(d, "Progressing")
    assert (progressing["status"], progressing["reason"], progressing["message"]) == \
        ("Unknown", "DeploymentPaused", "Deployment is paused")
    assert d["status"].get("updatedReplicas", 0) == 0  # `rollout status` keeps waiting
    sets = await replica_sets(client)
    assert [(image_of(rs), rs["spec"]["replicas"]) for rs in sets] == [("app:v1", 5)]

    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"paused": False}})
    d = await eventually(lambda: rolled_out(client, 5))
    assert [(image_of(rs), rs["spec"]["replicas"]) for rs in await replica_sets(client)] == \
        [("app:v1", 0), ("app:v2", 5)]
    assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"


async def sizes(client: ApiClient) -> dict[str, int]:
    return {image_of(rs): rs["spec"]["replicas"] for rs in await replica_sets(client)}


async def test_resizing_mid_rollout_is_proportional(client: ApiClient,
                                                    cluster_loops: None) -> None:
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 10, surge=3, unavailable=2))
    await eventually(lambda: rolled_out(client, 10))
    await set_image(client, "app:v2", node_selector=NOWHERE)  # new pods never start

    async def stuck() -> bool:
        return await sizes(client) == {"app:v1": 8, "app:v2": 5}
    await eventually(stuck)

    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"replicas": 20}})

    async def grown() -> bool:  # 13 -> 23 (20 + surge 3), shared 8:5, the rest to the larger
        return await sizes(client) == {"app:v1": 14, "app:v2": 9}
    await eventually(grown)
    for rs in await replica_sets(client):
        annotations = rs["metadata"]["annotations"]
        assert (annotations["deployment.kubernetes.io/desired-replicas"],
                annotations["deployment.kubernetes.io/max-replicas"]) == ("20", "23")

    names = {image_of(rs): rs["metadata"]["name"] for rs in await replica_sets(client)}
    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"replicas": 5}})

    async def shrunk() -> bool:
        # 23 -> 8 (5 + 3): 14 -> 5 and 9 -> 3 in proportion; then the rollout goes on within
        # its bounds: 2 more old ones may go (5 available, 3 needed), the new one takes
        # their room. Stuck again, at 3 + 5.
        return await sizes(client) == {"app:v1": 3, "app:v2": 5}
    await eventually(shrunk)
    told = await events(client)
    for image, frm, to in (("app:v1", 8, 14), ("app:v2", 5, 9), ("app:v1", 14, 5),
                           ("app:v2", 9, 3)):
        verb = "up" if to > frm else "down"
        assert ("ScalingReplicaSet",
                f"Scaled {verb} replica set {names[image]} from {frm} to {to}") in told

    await set_image(client, "app:v3")  # a template that runs: the rollout completes
    await eventually(lambda: rolled_out(client, 5))
    assert await sizes(client) == {"app:v1": 0, "app:v2": 0, "app:v3": 5}


async def test_progress_deadline_exceeded(client: ApiClient, cluster_loops: None) -> None:
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3, surge=1, unavailable=0,
                                                    progressDeadlineSeconds=2))
    await eventually(lambda: rolled_out(client, 3))
    await set_image(client, "app:v2", node_selector=NOWHERE)

    async def timed_out() -> Obj | None:
        d = await client.get(DEPLOYMENTS, NS, "web")
        conditions = (d.get("status") or {}).get("conditions") or []
        return d if any(c["type"] == "Progressing" and c["reason"] == "ProgressDeadlineExceeded"
                        for c in conditions) else None

    d = await eventually(timed_out, timeout=10)
    new = (await replica_sets(client))[-1]
    progressing = condition(d, "Progressing")
    assert (progressing["status"], progressing["message"]) == \
        ("False", f'ReplicaSet "{new["metadata"]["name"]}" has timed out progressing.')
    assert condition(d, "Available")["status"] == "True"  # the old pods still serve
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"]
    assert d["status"]["updatedReplicas"] == 1 and d["status"]["availableReplicas"] == 3


async def test_revision_history_limit(client: ApiClient, cluster_loops: None) -> None:
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 2, revisionHistoryLimit=1))
    await eventually(lambda: rolled_out(client, 2))
    for image in ("app:v2", "app:v3"):
        await set_image(client, image)
        await eventually(lambda: rolled_out(client, 2))

    async def cleaned() -> bool:
        return await sizes(client) == {"app:v2": 0, "app:v3": 2}
    await eventually(cleaned)
    revisions = [rs["metadata"]["annotations"][REVISION] for rs in await replica_sets(client)]
    assert revisions == ["2", "3"]


async def test_adopts_orphan_replica_sets(client: ApiClient, cluster_loops: None) -> None:
    spec = deployment("app:v1", 3)["spec"]
    current = {**spec["template"], "metadata": {"labels": {"app": "web", HASH: "same"}}}
    older = {"metadata": {"labels": {"app": "web", HASH: "older"}},
             "spec": {"containers": [{"name": "main", "image": "app:v0"}]}}
    for name, template, replicas in (("web-same", current, 1), ("web-older", older, 2)):
        await client.create(REPLICASETS, NS, {
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
                "name": name, "labels": template["metadata"]["labels"]},
            "spec": {"replicas": replicas, "template": template,
                     "selector": {"matchLabels": template["metadata"]["labels"]}}})
    created = await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3))
    d = await eventually(lambda: rolled_out(client, 3))

    sets = {rs["metadata"]["name"]: rs for rs in (await client.list(REPLICASETS, NS)).items}
    assert set(sets) == {"web-same", "web-older"}  # the matching one became the new one
    for rs in sets.values():
        ref = rs["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["uid"], ref["controller"]) == \
            ("Deployment", created["metadata"]["uid"], True)
    assert (sets["web-same"]["spec"]["replicas"], sets["web-older"]["spec"]["replicas"]) == (3, 0)
    assert sets["web-same"]["metadata"]["annotations"][REVISION] == "1"
    assert d["metadata"]["annotations"][REVISION] == "1"


async def test_unknown_strategy_is_left_alone(client: ApiClient,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A type with no row in the dispatch table (here Recreate, taken out): no ReplicaSet, a
    Warning Event once per generation, an Unknown Progressing condition."""
    monkeypatch.delitem(STRATEGIES, "Recreate")
    controller = DeploymentController(client)
    async with running(*(i.run() for i in controller.informers)):
        for informer in controller.informers:
            await informer.synced.wait()
        await client.create(DEPLOYMENTS, NS, deployment("app:v1", 2, strategy="Recreate"))
        await eventually(lambda: _cached(controller, "web"))
        for _ in range(3):
            await _reconcile(controller, f"{NS}/web")
            await _settled(controller)
        d = await client.get(DEPLOYMENTS, NS, "web")
        progressing = condition(d, "Progressing")
        assert (progressing["status"], progressing["reason"]) == \
            ("Unknown", "UnknownStrategyType")
        assert "Recreate" in progressing["message"]
        assert d["status"]["observedGeneration"] == 1
        assert (await client.list(REPLICASETS, NS)).items == []
        warnings = [e for e in await events(client) if e[0] == "UnknownStrategyType"]
        assert len(warnings) == 1


def _cached(controller: DeploymentController, name: str) -> Callable:
    async def check() -> bool:
        return controller.informers[0].get(f"{NS}/{name}") is not None
    return check()


async def _reconcile(controller: DeploymentController, key: str) -> None:
    try:
        await controller.reconcile(key)
    except Requeue:
        pass


async def _settled(controller: DeploymentController) -> None:
    """Until the controller's informers show its own writes (a pass would wait for them)."""
    async def seen() -> bool:
        return controller.expectations.waiting(f"{NS}/web") is None
    await eventually(seen)


async def test_racing_passes_make_one_replica_set(client: ApiClient) -> None:
    """Two passes at once, in one controller and in two (a leader and its successor, each with
    its own caches): one ReplicaSet per template, whatever the interleaving."""
    first, second = DeploymentController(client), DeploymentController(client)
    controllers = [first, second]
    async with running(*(i.run() for c in controllers for i in c.informers)):
        for c in controllers:
            for informer in c.informers:
                await informer.synced.wait()
        await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3))
        for c in controllers:
            await eventually(lambda c=c: _cached(c, "web"))
        key = f"{NS}/web"
        results = await asyncio.gather(first.reconcile(key), first.reconcile(key),
                                       second.reconcile(key), second.reconcile(key),
                                       return_exceptions=True)
        assert all(r is None or isinstance(r, Requeue) for r in results), results
        sets = (await client.list(REPLICASETS, NS)).items
        assert len(sets) == 1
        assert sets[0]["spec"]["replicas"] == 3
        assert sets[0]["metadata"]["name"] == f"web-{sets[0]['metadata']['labels'][HASH]}"

        await set_image(client, "app:v2")
        for c in controllers:
            await eventually(lambda c=c: _generation_cached(c, 2))
        for _ in range(3):
            await asyncio.gather(*(c.reconcile(key) for c in controllers for _ in range(2)),
                                 return_exceptions=True)
        sets = (await client.list(REPLICASETS, NS)).items
        assert sorted(image_of(rs) for rs in sets) == ["app:v1", "app:v2"]


def _generation_cached(controller: DeploymentController, generation: int) -> Any:
    async def check() -> bool:
        d = controller.informers[0].get(f"{NS}/web")
        return d is not None and d["metadata"]["generation"] >= generation
    return check()


async def test_late_writes_of_a_stale_view_fail(client: ApiClient) -> None:
    """What a deposed leader holds is stale: its writes carry the old resourceVersion and
    fail (Superseded), changing nothing."""
    controller = DeploymentController(client)
    stale_d = await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3))
    rs = await client.create(REPLICASETS, NS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-x"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": deployment("app:v1", 3)["spec"]["template"]}})
    await client.patch(REPLICASETS, NS, "web-x", {"spec": {"replicas": 4}})  # someone else
    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"replicas": 4}})
    io = _ApiIO(controller, f"{NS}/web")
    with pytest.raises(Superseded):
        await io.patch_replica_set(stale_d, rs, {"spec": {"replicas": 0}})
    with pytest.raises(Superseded):
        await io.write_status(stale_d, {"observedGeneration": 1, "replicas": 99})
    with pytest.raises(Superseded):
        await io.delete_replica_set(stale_d, rs)
    assert (await client.get(REPLICASETS, NS, "web-x"))["spec"]["replicas"] == 4
    assert (await client.get(DEPLOYMENTS, NS, "web")).get("status", {}).get("replicas") is None


async def test_hash_collision_bumps_collision_count(client: ApiClient,
                                                    cluster_loops: None) -> None:
    """The name ``web-<hash>`` is taken by a ReplicaSet that is not this Deployment's: the
    Deployment counts a collision and its ReplicaSet gets the name of the next hash."""
    created = await client.create(DEPLOYMENTS, NS, deployment("app:v1", 2, paused=True))
    taken = f"web-{template_hash(created['spec']['template'])}"
    other = {"metadata": {"labels": {"app": "other"}},
             "spec": {"containers": [{"name": "main", "image": "other"}]}}
    await client.create(REPLICASETS, NS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": taken},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
                 "template": other}})
    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"paused": False}})
    d = await eventually(lambda: rolled_out(client, 2))

    assert d["status"]["collisionCount"] == 1
    names = sorted(rs["metadata"]["name"] for rs in (await client.list(REPLICASETS, NS)).items)
    ours = f"web-{template_hash(created['spec']['template'], 1)}"
    assert names == sorted([taken, ours])
    squatter = await client.get(REPLICASETS, NS, taken)
    assert not squatter["metadata"].get("ownerReferences") and image_of(squatter) == "other"


async def test_a_strategy_plugs_in_through_the_dispatch_table(
        client: ApiClient, cluster_loops: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy module is one coroutine over ``Rollout``; registered under its type, the
    controller hands it every rollout of that type (here a toy for the Canary type: the new
    side at full size at once, the old one removed once the new one is all available)."""
    calls: list[str] = []

    async def all_at_once(r: Rollout) -> None:
        calls.append(r.name)
        new = await r.ensure_new_replica_set(replicas=r.replicas)
        if r.available(new) == r.replicas:
            for old in r.old_rss:
                await r.scale(old, 0)
            r.set_condition("ToyPromoted", "True", "AllAvailable", "new side took over")
        await r.sync_status()

    monkeypatch.setitem(STRATEGIES, "Canary", all_at_once)
    await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3, strategy="Canary"))
    await eventually(lambda: rolled_out(client, 3))
    await set_image(client, "app:v2")
    d = await eventually(lambda: rolled_out(client, 3))
    assert calls and set(calls) == {"web"}
    assert await sizes(client) == {"app:v1": 0, "app:v2": 3}
    assert condition(d, "ToyPromoted")["reason"] == "AllAvailable"
    assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"


async def test_a_slow_watch_makes_it_wait_for_its_own_writes(client: ApiClient) -> None:
    """Until its informers show what it wrote, a Deployment is not acted on again (a pass
    on the old picture would create a ReplicaSet twice or scale twice)."""
    controller = DeploymentController(client)
    sets = controller.informers[1]
    tasks = {i: asyncio.create_task(i.run()) for i in controller.informers}
    try:
        for informer in controller.informers:
            await informer.synced.wait()
        await client.create(DEPLOYMENTS, NS, deployment("app:v1", 3))
        await eventually(lambda: _cached(controller, "web"))
        tasks.pop(sets).cancel()  # the ReplicaSet watch stalls
        key = f"{NS}/web"
        await _reconcile(controller, key)
        assert len((await client.list(REPLICASETS, NS)).items) == 1
        assert sets.list() == []
        with pytest.raises(Requeue):
            await controller.reconcile(key)  # waits for its create to be seen
        assert controller.expectations.waiting(key) is not None
        assert len((await client.list(REPLICASETS, NS)).items) == 1

        tasks[sets] = asyncio.create_task(sets.run())  # the watch is back: relist
        await _settled(controller)
        await _reconcile(controller, key)
        assert len((await client.list(REPLICASETS, NS)).items) == 1
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_a_deployment_being_deleted_only_syncs_its_status(
        client: ApiClient, cluster_loops: None) -> None:
    """Kubernetes' syncStatusOnly: a Deployment held by a finalizer while deleted still has its
    status synced to its ReplicaSets, but nothing is scaled back or created."""
    d = deployment("app:v1", 2)
    d["metadata"]["finalizers"] = ["test.corral.dev/hold"]
    await client.create(DEPLOYMENTS, NS, d)
    await eventually(lambda: rolled_out(client, 2))
    await client.delete(DEPLOYMENTS, NS, "web")
    rs = (await replica_sets(client))[-1]
    await client.patch(REPLICASETS, NS, rs["metadata"]["name"], {"spec": {"replicas": 1}})

    async def synced() -> Obj | None:
        got = await client.get(DEPLOYMENTS, NS, "web")
        return got if (got.get("status") or {}).get("replicas") == 1 and \
            got["status"].get("availableReplicas") == 1 else None

    await eventually(synced)
    await asyncio.sleep(0.3)
    assert (await client.get(REPLICASETS, NS, rs["metadata"]["name"]))["spec"]["replicas"] == 1
    await set_image(client, "app:v2")  # a template change while deleted makes nothing
    await asyncio.sleep(0.3)
    assert len(await replica_sets(client)) == 1
    await client.patch(DEPLOYMENTS, NS, "web", {"metadata": {"finalizers": None}})
