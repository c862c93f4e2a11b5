"""The scheduler loop: each pending Pod gets a Node, bound through pods/binding.

Flow, in code order: two informers (every Pod, every Node) feed a cache of one ``NodeInfo`` per
node holding the pods bound to it; their handlers only keep that cache and enqueue keys of
pending pods (no nodeName, our schedulerName, not being deleted). ``reconcile(key)`` reads the
pod from the informer, asks the pure ``scheduling.schedule`` for a node and adds the pod to that
node's NodeInfo at once ("assumed", as kube-scheduler does), so the next pod sees it before the
watch does; then it hands the binding to a task of its own and returns, so the next pod is
placed while this one's binding goes through the store (kube-scheduler's binding cycle runs in a
goroutine the same way). At most ``max_binding`` bindings are in flight; an assumed pod is not
scheduled again while its binding is. A binding that fails undoes the assumption and, unless the
pod was bound elsewhere or is gone, puts the pod back on the queue with back-off. A pod that
fits nowhere gets PodScheduled=False (reason Unschedulable, kube-scheduler's message) and a
FailedScheduling Event, and waits until a node appears or changes or a pod goes away; then
every waiting pod is tried again.

Events ("Scheduled", "FailedScheduling") are a courtesy and never hold the loop up: they are
sent by the binding tasks after the binding, through an ``EventRecorder`` that drops them when
too many wait (``events.py``), as client-go's event broadcaster does.

Only the leading controller runs this (``manager.ControllerManager``). Binding is a
compare-and-set on an empty nodeName in the store, so a deposed leader's late bind fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
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
from ..client.events import NORMAL, WARNING, EventRecorder
from .scheduling.nodeinfo import NodeInfo
from .pods import NODE_INDEX, node_of
from .scheduling.podinfo import PodInfo, is_terminal
from .scheduling.schedule import schedule

log = logging.getLogger(__name__)

SCHEDULER_NAME = "default-scheduler"
#: Bindings in flight at most: enough for the store to commit many in one Raft entry.
MAX_BINDING = 64

Obj = dict[str, Any]


def _pending(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (not spec.get("nodeName") and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
            and not is_terminal(pod))


class Scheduler:
    def __init__(self, client: ApiClient, *, workers: int = 1,
                 informers: InformerFactory | None = None,
                 max_binding: int = MAX_BINDING) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._workers = workers
        self._binding_slots = asyncio.Semaphore(max_binding)
        self._bindings: set[asyncio.Task[None]] = set()
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
        try:
            await run_controller("scheduler", [self._nodes, self._pods], self._queue,
                                 self.reconcile, workers=self._workers)
        finally:
            bindings = list(self._bindings)
            for task in bindings:
                task.cancel()
            await asyncio.gather(*bindings, return_exceptions=True)

    # -- cache, kept by the informers' handlers -----------------------------------------------

    def _pod_added(self, pod: Obj) -> None:
        if _pending(pod):
            self._queue.add(key_of(pod))
            return
        assumed = self._assumed.pop(key_of(pod), None)  # the watch has caught up with our bind
        info = self._infos.get(node_of(pod)[0]) if node_of(pod) else None
        if info is not None:
            if is_terminal(pod):
                info.remove_pod(pod)
                self._retry_unschedulable()
            elif not self._confirm(info, assumed, pod):
                info.add_pod(pod)

    @staticmethod
    def _confirm(info: NodeInfo, assumed: Obj | None, pod: Obj) -> bool:
        """The watch shows our binding as assumed: keep the PodInfo parsed when the pod was
        scheduled (the binding changed nothing that it holds), now reading the pod as bound."""
        if assumed is None or assumed["spec"]["nodeName"] != info.name:
            return False
        meta, assumed_meta = pod["metadata"], assumed["metadata"]
        held = info.pods.get(meta.get("uid")
                             or f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}")
        if held is None or held.pod is not assumed or meta.get("deletionTimestamp") \
                or meta.get("labels") != assumed_meta.get("labels"):
            return False
        held.pod, held.spec = pod, pod.get("spec") or {}
        return True

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        self._pod_added(new)

    def _pod_deleted(self, pod: Obj) -> None:
        assumed = self._assumed.pop(key_of(pod), None)
        # The cache may still show the pod pending while our binding went through: it is
        # held on the node we assumed.
        nodes = set(node_of(pod)) | ({assumed["spec"]["nodeName"]} if assumed else set())
        for name in nodes:
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
        # A binding slot first: the pod is read, placed and assumed only once it can be bound.
        await self._binding_slots.acquire()
        try:
            bound = self._schedule_one(key)
        except BaseException:
            self._binding_slots.release()
            raise
        if not bound:
            self._binding_slots.release()

    def _schedule_one(self, key: str) -> bool:
        """Place the pod and start its binding (which releases the slot); False when it is not
        to be bound (gone, bound, binding already, or unschedulable)."""
        pod = self._pods.get(key)
        if pod is None or not _pending(pod) or key in self._assumed:
            return False  # gone, bound, or its binding is in flight
        info = PodInfo(pod)
        decision = schedule(info, self._order, start_index=self._next_start)
        self._next_start = decision.next_start_index
        if decision.node is None:
            self._unschedulable.add(key)  # now, so that no change of the cluster is missed
            self._spawn(self._mark_unschedulable(key, pod, decision.message),
                        f"scheduler: unschedulable {key}")
            return False
        assumed = {**pod, "spec": {**pod["spec"], "nodeName": decision.node}}
        self._assumed[key] = assumed
        info.pod, info.spec = assumed, assumed["spec"]  # parsed once, for schedule and cache
        self._infos[decision.node].add_pod(info)
        self._spawn(self._bind(key, pod, assumed, decision.node), f"scheduler: bind {key}")
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A binding or status write of its own, cancelled when the scheduler stops."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._bindings.add(task)
        task.add_done_callback(self._bindings.discard)

    async def _bind(self, key: str, pod: Obj, assumed: Obj, node: str) -> None:
        """The binding cycle of one assumed pod (holding a binding slot until the write ends)."""
        meta = pod["metadata"]
        try:
            await self._client.bind(meta["namespace"], meta["name"], node,
                                    uid=meta.get("uid", ""))
        except ApiError as exc:
            self._forget(key, assumed)
            if not isinstance(exc, (Conflict, NotFound)):  # else bound elsewhere, or gone
                log.warning("scheduler: binding %s to %s failed: %s", key, node, exc)
                self._queue.add_rate_limited(key)
            return
        except BaseException:
            self._forget(key, assumed)
            raise
        finally:
            self._binding_slots.release()
        await self._events.record(pod, NORMAL, "Scheduled",
                           f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}")

    def _forget(self, key: str, assumed: Obj) -> None:
        """Undo an assumption whose binding failed, on the node's current NodeInfo, unless the
        watch has meanwhile shown the pod bound to that very node (a retried binding that had
        gone through): then the cache holds what is true."""
        if self._assumed.get(key) is assumed:
            del self._assumed[key]
        node = assumed["spec"]["nodeName"]
        current = self._pods.get(key)
        if current is not None and node_of(current) == [node] and \
                current["metadata"].get("uid") == assumed["metadata"].get("uid"):
            return
        info = self._infos.get(node)
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
        except ApiError as exc:
            # Said next time the pod is tried (a change of the cluster, or a resync).
            log.info("scheduler: %s: condition not written: %s", key, exc.message)
            return
        await self._events.record(pod, WARNING, "FailedScheduling", message)
