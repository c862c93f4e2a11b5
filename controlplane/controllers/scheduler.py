"""The scheduler loop: each pending Pod gets a Node, bound through pods/binding.

Flow, in code order: two informers (every Pod, every Node) feed a cache of one ``NodeInfo`` per
node holding the pods bound to it; their handlers only keep that cache and enqueue keys of
pending pods (no nodeName, our schedulerName, not being deleted). ``reconcile(key)`` reads the
pod from the informer, asks the pure ``scheduling.schedule`` for a node, binds, and adds the pod
to that node's NodeInfo at once ("assumed", as kube-scheduler does), so the next pod sees it
before the watch does. A pod that fits nowhere gets PodScheduled=False (reason Unschedulable,
kube-scheduler's message) and a FailedScheduling Event, and waits until a node appears or
changes or a pod goes away; then every waiting pod is tried again.

Only the leading controller runs this (``manager.ControllerManager``). Binding is a
compare-and-set on an empty nodeName in the store, so a deposed leader's late bind fails.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from ..client import (
    NODES,
    PODS,
    ApiClient,
    ApiError,
    Conflict,
    FuncHandler,
    InformerFactory,
    NotFound,
    WorkQueue,
    key_of,
    run_controller,
)
from .events import NORMAL, WARNING, EventRecorder
from .scheduling.nodeinfo import NodeInfo
from .pods import NODE_INDEX, node_of
from .scheduling.podinfo import is_terminal
from .scheduling.schedule import schedule

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"

Obj = dict[str, Any]


def _pending(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
            and not is_terminal(pod))


class Scheduler:
    def __init__(self, client: ApiClient, *, workers: int = 1,
                 informers: InformerFactory | None = None) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._workers = workers
        self._events = EventRecorder(client, SCHEDULER_NAME)
        self._queue = WorkQueue()
        self._pods = informers.informer(PODS, indexers={NODE_INDEX: node_of})
        self._nodes = informers.informer(NODES)
        self._infos: dict[str, NodeInfo] = {}
        self._order: list[NodeInfo] = []
        self._unschedulable: set[str] = set()
        #: Pods bound by this scheduler that the pod informer has not shown bound yet.
        self._assumed: dict[str, Obj] = {}
        self._next_start = 0
        self._pods.add_handler(FuncHandler(self._pod_added, self._pod_updated,
                                           self._pod_deleted))
        self._nodes.add_handler(FuncHandler(self._node_changed,
                                            lambda old, new: self._node_changed(new),
                                            self._node_deleted))

    async def run(self) -> None:
        """Schedule until cancelled."""
        await run_controller("scheduler", [self._nodes, self._pods], self._queue, self.reconcile,
                             workers=self._workers)

    # -- cache, kept by the informers' handlers -----------------------------------------------

    def _pod_added(self, pod: Obj) -> None:
        if _pending(pod):
            self._queue.add(key_of(pod))
            return
        self._assumed.pop(key_of(pod), None)  # the watch has caught up with our bind
        info = self._infos.get(node_of(pod)[0]) if node_of(pod) else None
        if info is not None:
            if is_terminal(pod):
                info.remove_pod(pod)
                self._retry_unschedulable()
            else:
                info.add_pod(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        self._pod_added(new)

    def _pod_deleted(self, pod: Obj) -> None:
        self._assumed.pop(key_of(pod), None)
        for name in node_of(pod):
            info = self._infos.get(name)
            if info is not None and info.remove_pod(pod):
                self._retry_unschedulable()
        self._unschedulable.discard(key_of(pod))

    def _node_changed(self, node: Obj) -> None:
        name = (node.get("metadata") or {}).get("name", "")
        info = self._infos[name] = NodeInfo(node, self._pods.by_index(NODE_INDEX, name))
        for assumed in self._assumed.values():
            if assumed["spec"]["nodeName"] == name:
                info.add_pod(assumed)  # bound by us, not yet seen by the watch
        self._order = [self._infos[n] for n in sorted(self._infos)]
        self._retry_unschedulable()

    def _node_deleted(self, node: Obj) -> None:
        self._infos.pop((node.get("metadata") or {}).get("name", ""), None)
        self._order = [self._infos[n] for n in sorted(self._infos)]

    def _retry_unschedulable(self) -> None:
        waiting, self._unschedulable = self._unschedulable, set()
        for key in waiting:
            self._queue.add(key)

    # -- one pod ------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        pod = self._pods.get(key)
        if pod is None or not _pending(pod):
            return
        decision = schedule(pod, self._order, start_index=self._next_start)
        self._next_start = decision.next_start_index
        if decision.node is None:
            await self._mark_unschedulable(key, pod, decision.message)
            return
        assumed = {**pod, "spec": {**pod["spec"], "nodeName": decision.node}}
        self._assumed[key] = assumed
        self._infos[decision.node].add_pod(assumed)
        meta = pod["metadata"]
        try:
            await self._client.bind(meta["namespace"], meta["name"], decision.node)
        except ApiError as exc:
            self._forget(key, assumed)
            if isinstance(exc, (Conflict, NotFound)):
                return  # bound by someone else, or gone: nothing to do
            raise
        await self._events.record(pod, NORMAL, "Scheduled",
                                  f"Successfully assigned {meta['namespace']}/{meta['name']} "
                                  f"to {decision.node}")

    def _forget(self, key: str, assumed: Obj) -> None:
        """Undo an assumption whose binding failed (on the node's current NodeInfo)."""
        self._assumed.pop(key, None)
        info = self._infos.get(assumed["spec"]["nodeName"])
        if info is not None:
            info.remove_pod(assumed)

    async def _mark_unschedulable(self, key: str, pod: Obj, message: str) -> None:
        self._unschedulable.add(key)
        conditions = (pod.get("status") or {}).get("conditions") or ()
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if current is not None and current.get("status") == "False" \
                and current.get("message") == message:
            return  # said already: no write, no event
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": message, "lastProbeTime": None, "lastTransitionTime": now}
        meta = pod["metadata"]
        try:
            # Carries the resourceVersion read: a pod bound meanwhile is left alone.
            await self._client.patch(PODS, meta["namespace"], meta["name"],
                                     {"metadata": {"resourceVersion":
                                                   meta["resourceVersion"]},
                                      "status": {"conditions": [condition]}},
                                     patch_type="strategic", subresource="status")
        except Conflict:
            return  # the informer brings the newer pod, and with it another look
        except NotFound:
            self._unschedulable.discard(key)
            return
        await self._events.record(pod, WARNING, "FailedScheduling", message)
