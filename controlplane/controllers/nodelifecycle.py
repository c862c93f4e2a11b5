"""Node lifecycle: a node whose agent stops renewing its Lease goes NotReady, and its Pods are
evicted once their toleration of that runs out, so their ReplicaSets replace them elsewhere.

Flow, in code order (Kubernetes' node lifecycle controller and taint manager in small): every
``period`` seconds, ``check_nodes`` compares each Node's Lease in ``kube-node-lease`` with the
clock. A lease older than ``grace`` marks the Node's Ready condition Unknown ("Kubelet stopped
posting node status.") and taints it ``node.kubernetes.io/unreachable`` (NoSchedule, and
NoExecute with ``timeAdded``); a renewed lease on a Node whose agent reports Ready again lifts
the taints. ``evict_pods`` then deletes each Pod on a node with a NoExecute taint once the
Pod's toleration of it (``tolerationSeconds``; ``eviction_timeout`` when it has none, as
Kubernetes' DefaultTolerationSeconds admission gives every Pod 300 s) has passed; a Pod that
tolerates the taint without a limit stays. Every Node write carries the resourceVersion read,
so a deposed leader's late write fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..client import (
    LEASES,
    NODES,
    PODS,
    ApiClient,
    ApiError,
    Conflict,
    Informer,
    NotFound,
)
from .events import NORMAL, EventRecorder

log = logging.getLogger(__name__)

COMPONENT = "node-controller"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
#: kube-controller-manager's --node-monitor-grace-period default.
NODE_MONITOR_GRACE_SECONDS = 40.0
#: DefaultTolerationSeconds admission's default for not-ready/unreachable.
EVICTION_TIMEOUT_SECONDS = 300.0
NODE_INDEX = "node"
_TIME = "%Y-%m-%dT%H:%M:%SZ"

Obj = dict[str, Any]


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", _TIME):
        try:
            return datetime.strptime(text, layout).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def _format(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime(_TIME)


def _ready(node: Obj) -> str | None:
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status")
    return None


def toleration_seconds(pod: Obj, key: str, default: float) -> float | None:
    """How long ``pod`` tolerates the NoExecute taint ``key``; None: forever."""
    for toleration in (pod.get("spec") or {}).get("tolerations") or ():
        effect = toleration.get("effect") or ""
        if effect not in ("", "NoExecute"):
            continue
        if (toleration.get("operator") == "Exists" and not toleration.get("key")) or \
                toleration.get("key") == key:
            seconds = toleration.get("tolerationSeconds")
            return None if seconds is None else float(seconds)
    return default


class NodeLifecycleController:
    def __init__(self, client: ApiClient, *, grace: float = NODE_MONITOR_GRACE_SECONDS,
                 eviction_timeout: float = EVICTION_TIMEOUT_SECONDS, period: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._grace = grace
        self._eviction_timeout = eviction_timeout
        self._period = period
        self._clock = clock
        self._events = EventRecorder(client, COMPONENT)
        self._nodes = Informer(client, NODES)
        self._leases = Informer(client, LEASES, namespace="kube-node-lease")
        self._pods = Informer(client, PODS, indexers={
            NODE_INDEX: lambda pod: [n] if (n := (pod.get("spec") or {}).get("nodeName")) else []})
        self._first_seen: dict[str, float] = {}

    async def run(self) -> None:
        informers = [asyncio.create_task(i.run(), name=f"node lifecycle: {i.res.plural}")
                     for i in (self._nodes, self._leases, self._pods)]
        try:
            for informer in (self._nodes, self._leases, self._pods):
                await informer.synced.wait()
            while True:
                try:
                    await self.check_nodes()
                    await self.evict_pods()
                except ApiError as exc:
                    log.warning("node lifecycle pass: %s", exc.message)
                await asyncio.sleep(self._period)
        finally:
            for task in informers:
                task.cancel()
            await asyncio.gather(*informers, return_exceptions=True)

    async def check_nodes(self) -> None:
        now = self._clock()
        for node in self._nodes.list():
            name = node["metadata"]["name"]
            lease = self._leases.get(f"kube-node-lease/{name}")
            renewed = _parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
            # A node seen without a lease yet gets the grace period from when we first saw it.
            heard = renewed if renewed is not None else self._first_seen.setdefault(name, now)
            stale = now - heard > self._grace
            tainted = any(t.get("key") == TAINT_UNREACHABLE
                          for t in (node.get("spec") or {}).get("taints") or ())
            if stale and (not tainted or _ready(node) != "Unknown"):
                await self._mark_unreachable(node, now)
            elif not stale and tainted and _ready(node) == "True":
                await self._lift(node)

    async def _mark_unreachable(self, node: Obj, now: float) -> None:
        spec = dict(node.get("spec") or {})
        taints = [t for t in spec.get("taints") or () if t.get("key") != TAINT_UNREACHABLE]
        taints += [{"key": TAINT_UNREACHABLE, "effect": "NoSchedule"},
                   {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": _format(now)}]
        conditions = [c for c in (node.get("status") or {}).get("conditions") or ()
                      if c.get("type") != "Ready"]
        conditions.append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                           "message": "Kubelet stopped posting node status.",
                           "lastTransitionTime": _format(now), "lastHeartbeatTime": None})
        name = node["metadata"]["name"]
        try:
            updated = await self._client.update(NODES, {**node, "spec": {**spec,
                                                                         "taints": taints}})
            await self._client.update(NODES, {**updated, "status": {
                **(updated.get("status") or {}), "conditions": conditions}},
                subresource="status")
        except (Conflict, NotFound):
            return  # the informer brings the news; the next pass decides again
        log.warning("node %s stopped renewing its lease: NotReady, tainted %s", name,
                    TAINT_UNREACHABLE)
        await self._events.record(node, NORMAL, "NodeNotReady",
                                  f"Node {name} status is now: NodeNotReady")

    async def _lift(self, node: Obj) -> None:
        spec = dict(node.get("spec") or {})
        spec["taints"] = [t for t in spec.get("taints") or () if t.get("key") != TAINT_UNREACHABLE]
        try:
            await self._client.update(NODES, {**node, "spec": spec})
        except (Conflict, NotFound):
            return

    async def evict_pods(self) -> None:
        now = self._clock()
        for node in self._nodes.list():
            for taint in (node.get("spec") or {}).get("taints") or ():
                if taint.get("effect") != "NoExecute" or \
                        taint.get("key") not in (TAINT_UNREACHABLE, TAINT_NOT_READY):
                    continue
                since = _parse_time(taint.get("timeAdded")) or now
                for pod in self._pods.by_index(NODE_INDEX, node["metadata"]["name"]):
                    await self._maybe_evict(pod, taint["key"], now - since)

    async def _maybe_evict(self, pod: Obj, key: str, tainted_for: float) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            return
        limit = toleration_seconds(pod, key, self._eviction_timeout)
        if limit is None or tainted_for < limit:
            return
        try:
            await self._client.delete(PODS, meta["namespace"], meta["name"], uid=meta.get("uid"))
        except (Conflict, NotFound):
            return
        await self._events.record(pod, NORMAL, "TaintManagerEviction",
                                  f"Marking for deletion Pod {meta['namespace']}/{meta['name']}")
