"""What the BlueGreen and Canary controller tests share: hollow nodes with the scheduler and
the ReplicaSet and Deployment controllers, Deployment and Service builders, and a
``Recorder`` of every pod, Service, ReplicaSet and Deployment event, replayed in
resourceVersion order: the invariants are checked at each event against the state of that
very moment (separate watches arrive in no common order; resourceVersions are one order)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ctlharness import running

from controlplane.client import (
    DEPLOYMENTS,
    EVENTS,
    PODS,
    REPLICASETS,
    SERVICES,
    ApiClient,
    FuncHandler,
    Informer,
    InformerFactory,
)
from controlplane.controllers.deployment import DeploymentController
from controlplane.controllers.pods import pod_ready
from controlplane.controllers.replicaset import ReplicaSetController
from controlplane.controllers.scheduler import Scheduler
from nodeagent.hollow import HollowFleet

Obj = dict[str, Any]
NS = "default"
HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
LABELS = {"app": "web"}


@asynccontextmanager
async def cluster(client: ApiClient) -> AsyncIterator[None]:
    """Hollow nodes, the scheduler, the ReplicaSet and Deployment controllers (informers
    shared as a leader's loops share them)."""
    informers = InformerFactory(client)
    fleet = HollowFleet(client, [f"hollow-{i}" for i in range(4)])
    async with running(fleet.run(), Scheduler(client, informers=informers).run(),
                       ReplicaSetController(client, informers=informers).run(),
                       DeploymentController(client, informers=informers).run()):
        yield


def deployment(image: str, replicas: int, strategy: str, settings: Obj | None = None) -> Obj:
    rollout: Obj = {"type": strategy}
    if settings is not None:
        rollout["blueGreen" if strategy == "BlueGreen" else "canary"] = settings
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": LABELS},
                     "strategy": rollout,
                     "template": {"metadata": {"labels": LABELS},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


def service(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": dict(LABELS), "ports": [{"port": 80}]}}


async def set_image(client: ApiClient, image: str) -> None:
    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": image}]}}}}, patch_type="strategic")


async def resume(client: ApiClient) -> None:
    """What `kubectl rollout resume` sends (kubectl 1.31: the two-way strategic merge patch of
    the Deployment with paused false, which omitempty drops)."""
    await client.patch(DEPLOYMENTS, NS, "web", {"spec": {"paused": None}},
                       patch_type="strategic")


async def roll_back_to(client: ApiClient, rs: Obj) -> None:
    """What `kubectl rollout undo` sends: the ReplicaSet's template, hash label removed."""
    template = rs["spec"]["template"]
    del template["metadata"]["labels"][HASH]
    await client.patch(DEPLOYMENTS, NS, "web", [
        {"op": "replace", "path": "/spec/template", "value": template}], patch_type="json")


def image_of(obj: Obj) -> str:
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    return str(spec["containers"][0]["image"])


def active(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


async def rolled_out(client: ApiClient, replicas: int, image: str | None = None) -> Obj | None:
    """The Deployment once `kubectl rollout status` would say it is rolled out (and, given
    ``image``, every live pod runs it), else None."""
    d = await client.get(DEPLOYMENTS, NS, "web")
    status = d.get("status") or {}
    done = (status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == replicas
            and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas)
    if done and image is not None:
        pods = [p for p in (await client.list(PODS, NS)).items if active(p)]
        done = sorted(image_of(p) for p in pods) == [image] * replicas
    return d if done else None


async def replica_sets(client: ApiClient) -> dict[str, Obj]:
    """The ReplicaSets by image."""
    return {image_of(rs): rs for rs in (await client.list(REPLICASETS, NS)).items}


def condition(d: Obj, type_: str) -> Obj | None:
    return next((c for c in (d.get("status") or {}).get("conditions") or ()
                 if c["type"] == type_), None)


async def events(client: ApiClient, reason: str | None = None) -> list[tuple[str, str]]:
    """The Deployment controller's Events (``reason``'s only, if given), as recorded."""
    items = sorted((await client.list(EVENTS, NS)).items,
                   key=lambda e: int(e["metadata"]["resourceVersion"]))
    told = [(e["reason"], e["message"]) for e in items
            if e["source"]["component"] == "deployment-controller"]
    return [e for e in told if reason is None or e[0] == reason]


def selector_hash(svc: Obj | None) -> str | None:
    return (((svc or {}).get("spec") or {}).get("selector") or {}).get(HASH)


@dataclass
class Event:
    revision: int
    kind: str
    key: str
    obj: Obj | None  # None: deleted
    #: time.monotonic() when the test's watch delivered it
    at: float
    #: Part of the first list (the state the recorder started from), not a change seen.
    initial: bool = False


@dataclass
class World:
    """The namespace as of one event: kind -> name -> object."""

    objects: dict[str, dict[str, Obj]]

    def pods(self) -> list[Obj]:
        return [p for p in self.objects["pods"].values() if active(p)]

    def ready(self, image: str | None = None, pod_hash: str | None = None) -> int:
        return sum(1 for p in self.pods() if pod_ready(p)
                   and (image is None or image_of(p) == image)
                   and (pod_hash is None or p["metadata"]["labels"].get(HASH) == pod_hash))

    def count(self, image: str) -> int:
        return sum(1 for p in self.pods() if image_of(p) == image)


class Recorder:
    """Every event of pods, Services, ReplicaSets and Deployments of the namespace from
    ``start()`` on (the first list's included, marked ``initial``); ``replay()`` yields each
    with the world just after it, in resourceVersion order."""

    KINDS = {"pods": PODS, "services": SERVICES, "replicasets": REPLICASETS,
             "deployments": DEPLOYMENTS}

    def __init__(self, client: ApiClient) -> None:
        self.events: list[Event] = []
        self._informers = {kind: Informer(client, res, namespace=NS)
                           for kind, res in self.KINDS.items()}
        self._tasks: list[asyncio.Task[None]] = []
        for kind, informer in self._informers.items():
            informer.add_handler(FuncHandler(
                lambda obj, kind=kind: self._saw(kind, obj),
                lambda _old, new, kind=kind: self._saw(kind, new),
                lambda obj, kind=kind: self._saw(kind, obj, gone=True)))

    def _saw(self, kind: str, obj: Obj, *, gone: bool = False) -> None:
        self.events.append(Event(int(obj["metadata"]["resourceVersion"]), kind,
                                 obj["metadata"]["name"], None if gone else obj,
                                 time.monotonic(),
                                 initial=not self._informers[kind].synced.is_set()))

    async def start(self) -> Recorder:
        self._tasks = [asyncio.create_task(i.run()) for i in self._informers.values()]
        for informer in self._informers.values():
            await informer.synced.wait()
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def replay(self) -> Iterator[tuple[Event, World]]:
        world = World({kind: {} for kind in self.KINDS})
        for event in sorted(self.events, key=lambda e: e.revision):
            if event.obj is None:
                world.objects[event.kind].pop(event.key, None)
            else:
                world.objects[event.kind][event.key] = event.obj
            yield event, world
