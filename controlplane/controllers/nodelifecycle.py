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
tolerates the taint without a limit stays; when no node at all is Ready, evictions wait (the
"full disruption" rule). Every Node write carries the resourceVersion read, so a deposed
leader's late write fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..client import (
    LEASES,
    NODES,
    PODS,
    ApiClient,
    ApiError,
    Conflict,
    InformerFactory,
    NotFound,
)
from ..client.events import NORMAL, EventRecorder
from ..client.timestamps import format_time, parse_time
from .pods import NODE_INDEX, node_of
from .scheduling.filters import tolerates

log = logging.getLogger(__name__)

COMPONENT = "node-controller"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
#: kube-controller-manager's --node-monitor-grace-period default.
NODE_MONITOR_GRACE_SECONDS = 40.0
#: DefaultTolerationSeconds admission's default for not-ready/unreachable.
EVICTION_TIMEOUT_SECONDS = 300.0

Obj = dict[str, Any]


def _ready(node: Obj) -> str | None:
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return condition.get("status")
    return None


def toleration_seconds(pod: Obj, key: str, default: float) -> float | None:
    """How long ``pod`` tolerates the NoExecute taint ``key`` (empty value); None: forever.

    As Kubernetes' taint manager: among the tolerations that match the taint, the smallest
    tolerationSeconds wins; only if none of them sets one is it tolerated forever. A pod with
    no matching toleration gets ``default`` (what DefaultTolerationSeconds would have added).
    """
    matching = [t for t in (pod.get("spec") or {}).get("tolerations") or ()
                if tolerates([(t.get("key") or "", t.get("operator") or "",
                               t.get("value") or "", t.get("effect") or "")],
                             key, "", "NoExecute")]
    if not matching:
        return default
    limits = [float(t["tolerationSeconds"]) for t in matching
              if t.get("tolerationSeconds") is not None]
    return max(0.0, min(limits)) if limits else None


class NodeLifecycleController:
    def __init__(self, client: ApiClient, *, grace: float = NODE_MONITOR_GRACE_SECONDS,
                 eviction_timeout: float = EVICTION_TIMEOUT_SECONDS, period: float = 5.0,
                 clock: Callable[[], float] = time.time,
                 informers: InformerFactory | None = None) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._grace = grace
        self._eviction_timeout = eviction_timeout
        self._period = period
        self._clock = clock
        self._events = EventRecorder(client, COMPONENT)
        self._nodes = informers.informer(NODES)
        self._leases = informers.informer(LEASES)
        self._pods = informers.informer(PODS, indexers={NODE_INDEX: node_of})
        #: node -> (the lease's renewTime as last seen, our clock when it changed). Staleness
        #: is measured on our own clock from when we saw the lease move, as Kubernetes does:
        #: a new leader gives every node a full grace period, and clock skew does not count.
        self._observed: dict[str, tuple[str | None, float]] = {}

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
        names = set()
        for node in self._nodes.list():
            name = node["metadata"]["name"]
            names.add(name)
            lease = self._leases.get(f"kube-node-lease/{name}")
            renew = ((lease or {}).get("spec") or {}).get("renewTime")
            seen = self._observed.get(name)
            if seen is None or seen[0] != renew:
                self._observed[name] = seen = (renew, now)
            stale = now - seen[1] > self._grace
            tainted = any(t.get("key") == TAINT_UNREACHABLE
                          for t in (node.get("spec") or {}).get("taints") or ())
            if stale and (not tainted or _ready(node) != "Unknown"):
                await self._mark_unreachable(node, now)
            elif not stale and tainted and _ready(node) == "True":
                await self._lift(node)
        for gone in set(self._observed) - names:
            del self._observed[gone]

    async def _mark_unreachable(self, node: Obj, now: float) -> None:
        """Ready=Unknown first, then the taints; a NoExecute taint keeps its first timeAdded,
        so retries never postpone evictions."""
        name = node["metadata"]["name"]
        try:
            if _ready(node) != "Unknown":
                conditions = [c for c in (node.get("status") or {}).get("conditions") or ()
                              if c.get("type") != "Ready"]
                conditions.append({"type": "Ready", "status": "Unknown",
                                   "reason": "NodeStatusUnknown",
                                   "message": "Kubelet stopped posting node status.",
                                   "lastTransitionTime": format_time(now)})
                node = await self._client.update(NODES, {**node, "status": {
                    **(node.get("status") or {}), "conditions": conditions}},
                    subresource="status")
            spec = dict(node.get("spec") or {})
            old = spec.get("taints") or []
            added = next((t.get("timeAdded") for t in old if t.get("key") == TAINT_UNREACHABLE
                          and t.get("effect") == "NoExecute"), None) or format_time(now)
            taints = [t for t in old if t.get("key") != TAINT_UNREACHABLE]
            taints += [{"key": TAINT_UNREACHABLE, "effect": "NoSchedule"},
                       {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": added}]
            if taints != old:
                await self._client.update(NODES, {**node, "spec": {**spec, "taints": taints}})
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
        nodes = self._nodes.list()
        if nodes and all(_ready(node) != "True" for node in nodes):
            # Full disruption: more likely this controller's view or the network than every
            # node at once, and there is nowhere to move the pods to (Kubernetes stops too).
            log.warning("no node is Ready: holding evictions")
            return
        for node in nodes:
            for taint in (node.get("spec") or {}).get("taints") or ():
                if taint.get("effect") != "NoExecute" or \
                        taint.get("key") not in (TAINT_UNREACHABLE, TAINT_NOT_READY):
                    continue
                since = parse_time(taint.get("timeAdded")) or now
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
