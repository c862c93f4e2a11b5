"""The ReplicaSet controller: exactly spec.replicas active Pods for every ReplicaSet.

Flow, in code order (Kubernetes' replica_set.go in small): informers on ReplicaSets and Pods
(Pods indexed by their controller's uid); handlers only enqueue ReplicaSet keys: the owner of
a changed Pod, or, for an orphan, every ReplicaSet of its namespace whose selector matches it.
``reconcile(key)`` adopts matching orphans and releases owned Pods that stopped matching
(ownerReference patches that carry the Pod's resourceVersion: compare-and-swap), then creates
or deletes the difference between active Pods and spec.replicas, and writes status through the
status subresource. Failed and Succeeded Pods are not active: a Pod that failed is replaced.
A Ready pod not yet available (``minReadySeconds``) brings its ReplicaSet back (``Requeue``)
when it becomes so, since no event tells that moment.

Expectations, as Kubernetes keeps them: after creating or deleting N Pods, a ReplicaSet waits
until its informer has seen those N events (or ``EXPECTATIONS_TIMEOUT`` passed) before it counts
again, so a slow watch never makes it create twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..client import (
    PODS,
    REPLICASETS,
    ApiClient,
    ApiError,
    Conflict,
    FuncHandler,
    InformerFactory,
    NotFound,
    Requeue,
    WorkQueue,
    key_of,
    run_controller,
)
from ..client.events import NORMAL, WARNING, EventRecorder
from ..api.selectors import LabelSelector
from .pods import OWNER_INDEX, available_in, controller_ref, is_active, owner_uid, pod_ready

log = logging.getLogger(__name__)

COMPONENT = "replicaset-controller"
#: Kubernetes' ExpectationsTimeout: stop waiting for a lost watch event after this long.
EXPECTATIONS_TIMEOUT = 300.0
#: Pods created or deleted concurrently per reconcile (Kubernetes' burstReplicas is 500).
BURST_REPLICAS = 500

Obj = dict[str, Any]


@dataclass
class _Expectation:
    """Creates still to be seen (a count: their names are generated) and deletes still to be
    seen (by key: only the pods this controller deleted count, each once)."""

    adds: int
    deletes: set[str]
    since: float


class ReplicaSetController:
    def __init__(self, client: ApiClient, *, workers: int = 2,
                 informers: InformerFactory | None = None) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._workers = workers
        self._events = EventRecorder(client, COMPONENT)
        self._queue = WorkQueue()
        self._sets = informers.informer(REPLICASETS)
        self._pods = informers.informer(PODS, indexers={OWNER_INDEX: owner_uid})
        self._expect: dict[str, _Expectation] = {}
        self._sets.add_handler(FuncHandler(self._enqueue, lambda old, new: self._enqueue(new),
                                           self._set_deleted))
        self._pods.add_handler(FuncHandler(lambda pod: self._pod_seen(pod, add=True),
                                           self._pod_updated,
                                           lambda pod: self._pod_seen(pod, add=False)))

    async def run(self) -> None:
        await run_controller("replicaset", [self._sets, self._pods], self._queue, self.reconcile,
                             workers=self._workers)

    # -- handlers: keys only -------------------------------------------------------------------

    def _enqueue(self, rs: Obj) -> None:
        self._queue.add(key_of(rs))

    def _set_deleted(self, rs: Obj) -> None:
        self._expect.pop(key_of(rs), None)

    def _owner_key(self, pod: Obj) -> str | None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return None
        return f"{pod['metadata'].get('namespace')}/{ref.get('name')}"

    def _pod_seen(self, pod: Obj, *, add: bool) -> None:
        owner = self._owner_key(pod)
        if owner is not None:
            expectation = self._expect.get(owner)
            if expectation is not None:
                if add:
                    expectation.adds = max(0, expectation.adds - 1)
                else:
                    expectation.deletes.discard(key_of(pod))
            self._queue.add(owner)
        elif add:
            self._enqueue_matching(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if new["metadata"].get("deletionTimestamp") and \
                not old["metadata"].get("deletionTimestamp"):
            # Graceful deletion started: what a delete is expected to cause (as Kubernetes).
            self._pod_seen(new, add=False)
            return
        for pod in (old, new):
            owner = self._owner_key(pod)
            if owner is not None:
                self._queue.add(owner)
        if controller_ref(new) is None:
            self._enqueue_matching(new)

    def _enqueue_matching(self, pod: Obj) -> None:
        """An orphan: the ReplicaSets that may adopt it look at it."""
        namespace = pod["metadata"].get("namespace")
        labels = pod["metadata"].get("labels") or {}
        for rs in self._sets.list():
            if rs["metadata"].get("namespace") == namespace and \
                    _selector(rs).matches(labels):
                self._queue.add(key_of(rs))

    def _satisfied(self, key: str) -> bool:
        expectation = self._expect.get(key)
        if expectation is None:
            return True
        if (expectation.adds <= 0 and not expectation.deletes) or \
                time.monotonic() - expectation.since > EXPECTATIONS_TIMEOUT:
            del self._expect[key]
            return True
        return False

    # -- one ReplicaSet ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rs = self._sets.get(key)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        pods = await self._claim(rs)
        active = [p for p in pods if is_active(p)]
        if self._satisfied(key):
            want = int((rs.get("spec") or {}).get("replicas", 1))
            diff = want - len(active)
            if diff > 0:
                await self._create(key, rs, min(diff, BURST_REPLICAS))
            elif diff < 0:
                await self._delete(key, rs, _deletion_order(active)[:min(-diff, BURST_REPLICAS)])
        await self._write_status(rs, pods)
        # A Ready pod becomes available minReadySeconds later with no event to tell: look
        # again then, so status.availableReplicas (what a Deployment rolls by) catches up.
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
        waits = [w for w in (available_in(p, min_ready) for p in active) if w]
        if waits:
            raise Requeue(min(waits) + 0.05)

    async def _claim(self, rs: Obj) -> list[Obj]:
        """Owned pods that still match, plus matching orphans adopted now."""
        uid, namespace = rs["metadata"]["uid"], rs["metadata"]["namespace"]
        selector = _selector(rs)
        owned = []
        for pod in self._pods.by_index(OWNER_INDEX, uid):
            if selector.matches(pod["metadata"].get("labels")):
                owned.append(pod)
            elif not pod["metadata"].get("deletionTimestamp"):
                await self._set_owner(pod, None)
        for pod in self._pods.list():
            meta = pod["metadata"]
            if meta.get("namespace") != namespace or controller_ref(pod) is not None \
                    or not is_active(pod) or not selector.matches(meta.get("labels")):
                continue
            adopted = await self._set_owner(pod, rs)
            if adopted is not None:
                owned.append(adopted)
        return owned

    async def _set_owner(self, pod: Obj, rs: Obj | None) -> Obj | None:
        """Adopt (``rs``) or release (None) a pod; None if it changed meanwhile."""
        meta = pod["metadata"]
        refs = [r for r in meta.get("ownerReferences") or () if not r.get("controller")]
        if rs is not None:
            refs.append(_reference(rs))
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"],
                              "ownerReferences": refs or None}}
        try:
            return await self._client.patch(PODS, meta["namespace"], meta["name"], patch)
        except (Conflict, NotFound):
            return None

    async def _create(self, key: str, rs: Obj, count: int) -> None:
        self._expect[key] = _Expectation(count, set(), time.monotonic())
        template = (rs.get("spec") or {}).get("template") or {}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {**(template.get("metadata") or {}),
                            "generateName": f"{rs['metadata']['name']}-",
                            "ownerReferences": [_reference(rs)]},
               "spec": template.get("spec") or {}}
        results = await asyncio.gather(
            *(self._client.create(PODS, rs["metadata"]["namespace"], pod) for _ in range(count)),
            return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        expectation = self._expect.get(key)
        if expectation is not None:
            expectation.adds -= len(failures)
        if failures:
            message = str(getattr(failures[0], "message", failures[0]))
            await self._events.record(rs, WARNING, "FailedCreate", f"Error creating: {message}")
            raise failures[0]
        await self._events.record(rs, NORMAL, "SuccessfulCreate",
                                  f"Created {count} pod{'s' if count > 1 else ''}")

    async def _delete(self, key: str, rs: Obj, pods: list[Obj]) -> None:
        self._expect[key] = _Expectation(0, {key_of(p) for p in pods}, time.monotonic())
        results = await asyncio.gather(
            *(self._client.delete(PODS, p["metadata"]["namespace"], p["metadata"]["name"],
                                  uid=p["metadata"]["uid"]) for p in pods),
            return_exceptions=True)
        expectation = self._expect.get(key)
        for pod, result in zip(pods, results):
            if isinstance(result, BaseException) and expectation is not None:
                expectation.deletes.discard(key_of(pod))  # no event will come for it
        errors = [r for r in results
                  if isinstance(r, BaseException) and not isinstance(r, NotFound)]
        if errors:
            raise errors[0]
        names = ", ".join(p["metadata"]["name"] for p in pods)
        await self._events.record(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {names}")

    async def _write_status(self, rs: Obj, pods: list[Obj]) -> None:
        spec, status = rs.get("spec") or {}, rs.get("status") or {}
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        active = [p for p in pods if is_active(p)]
        ready = [p for p in active if pod_ready(p)]
        min_ready = int(spec.get("minReadySeconds") or 0)
        new = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active
                if template_labels.items() <= (p["metadata"].get("labels") or {}).items()),
            "readyReplicas": len(ready),
            "availableReplicas": sum(1 for p in ready if pod_ready(p, min_ready)),
            "observedGeneration": rs["metadata"].get("generation", 0),
        }
        if status.get("conditions"):
            new["conditions"] = status["conditions"]
        if all(status.get(k) == v for k, v in new.items()) and \
                set(status) <= set(new):
            return
        try:
            await self._client.update(REPLICASETS, {**rs, "status": new}, subresource="status")
        except (Conflict, NotFound):
            pass  # the informer's news of the change enqueues this ReplicaSet again
        except ApiError as exc:
            log.warning("status of %s: %s", key_of(rs), exc.message)
            raise


def _selector(rs: Obj) -> LabelSelector:
    return LabelSelector.from_object((rs.get("spec") or {}).get("selector"))


def _reference(rs: Obj) -> Obj:
    meta = rs["metadata"]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def _deletion_order(pods: list[Obj]) -> list[Obj]:
    """Which pods go first when scaling down, as Kubernetes ranks them: unscheduled, then
    pending, then not ready, then the most recently created."""
    def rank(pod: Obj) -> tuple[int, int, int, str]:
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
        return (1 if spec.get("nodeName") else 0,
                1 if status.get("phase") == "Running" else 0,
                1 if pod_ready(pod) else 0,
                "".join(chr(0x10FFFF - ord(c)) for c in created))  # newest first
    return sorted(pods, key=rank)
