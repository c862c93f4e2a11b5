"""The namespace controller: a deleted namespace is emptied, then finalized, then it goes.

Kubernetes' namespace controller (``pkg/controller/namespace``) in small. Deleting a Namespace
only marks it (``deletionTimestamp``, phase Terminating); the API refuses new content in it and
keeps it while ``spec.finalizers`` holds ``kubernetes``, the token of this controller.

Flow, in code order: handlers enqueue namespace names: a namespace being deleted, and the
namespace of any object deleted while its namespace is (so the last one going wakes it at
once). ``reconcile(name)`` reads the namespace live (the cache may still show a namespace of
that name that has gone and been created again: only a live read with a deletionTimestamp
counts), then, for every namespaced resource, deletes the collection (Background propagation)
and lists what is left. Content that lingers (a Pod's grace period, finalizers) is waited for:
the namespace's conditions say what remains and the key comes back after an estimate (half the
longest grace period or finalizer estimate, plus a second, at most ``RECHECK_MAX_SECONDS``), or
earlier when content goes. Once nothing is left, a PUT of ``namespaces/{name}/finalize``
without ``kubernetes`` (carrying the resourceVersion read) lets the API remove the namespace,
as soon as its ``metadata.finalizers`` are done too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..client import (
    EVENTS,
    NAMESPACES,
    PODS,
    SERVED,
    ApiClient,
    ApiError,
    Conflict,
    FuncHandler,
    InformerFactory,
    NotFound,
    Requeue,
    Resource,
    WorkQueue,
    run_controller,
)

log = logging.getLogger(__name__)

#: The token in ``spec.finalizers`` this controller removes (Kubernetes' FinalizerKubernetes).
FINALIZER = "kubernetes"
#: Assumed time for an object's finalizers to finish (Kubernetes' finalizerEstimateSeconds).
FINALIZER_ESTIMATE_SECONDS = 15.0
#: Longest wait before looking again at a namespace whose content lingers.
RECHECK_MAX_SECONDS = 10.0
#: Pause before trying again after a write lost a race with another writer (seconds).
RETRY_SECONDS = 0.2
_TIME = "%Y-%m-%dT%H:%M:%SZ"

Obj = dict[str, Any]
#: Condition types Kubernetes' namespace controller keeps on a terminating namespace.
DISCOVERY_FAILURE = "NamespaceDeletionDiscoveryFailure"
PARSING_FAILURE = "NamespaceDeletionGroupVersionParsingFailure"
CONTENT_FAILURE = "NamespaceDeletionContentFailure"
CONTENT_REMAINING = "NamespaceContentRemaining"
FINALIZERS_REMAINING = "NamespaceFinalizersRemaining"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _group_resource(res: Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


class _Remaining:
    """What a pass over a namespace found left: counts per resource and per finalizer, the
    resources that could not be deleted, and an estimate of when it may be gone (seconds)."""

    def __init__(self) -> None:
        self.resources: Counter[str] = Counter()
        self.finalizers: Counter[str] = Counter()
        self.failures: list[str] = []
        self.estimate = 0.0

    def __bool__(self) -> bool:
        return bool(self.resources or self.failures)


class NamespaceController:
    def __init__(self, client: ApiClient, *, informers: InformerFactory | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._clock = clock
        self._queue = WorkQueue()
        self._content_resources = [res for res in SERVED if res.namespaced]
        self._namespaces = informers.informer(NAMESPACES)
        # Events are deleted with the rest but not watched: they never linger (no finalizers
        # or grace), and a cache of every Event would only grow.
        self._content = [informers.informer(res) for res in self._content_resources
                         if res is not EVENTS]
        self._namespaces.add_handler(FuncHandler(self._namespace_seen,
                                                 self._namespace_updated))
        for informer in self._content:
            informer.add_handler(FuncHandler(on_delete=self._content_deleted))

    async def run(self) -> None:
        await run_controller("namespace", [self._namespaces, *self._content], self._queue,
                             self.reconcile)

    # -- handlers: keys only -------------------------------------------------------------------

    def _namespace_seen(self, ns: Obj) -> None:
        if ns["metadata"].get("deletionTimestamp"):
            self._queue.add(ns["metadata"]["name"])

    def _namespace_updated(self, old: Obj, new: Obj) -> None:
        # A change of status alone is this controller's own write: nothing new to act on.
        if _lifecycle(old) != _lifecycle(new):
            self._namespace_seen(new)

    def _content_deleted(self, obj: Obj) -> None:
        namespace = (obj.get("metadata") or {}).get("namespace")
        ns = self._namespaces.get(namespace) if namespace else None
        if ns is not None and ns["metadata"].get("deletionTimestamp"):
            self._queue.add(namespace)

    # -- one namespace -------------------------------------------------------------------------

    async def reconcile(self, name: str) -> None:
        try:
            ns = await self._client.get(NAMESPACES, "", name)
        except NotFound:
            return
        if not ns["metadata"].get("deletionTimestamp") or \
                FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or ()):
            return  # alive (perhaps made again under the same name), or finalized already
        remaining = await self._delete_content(name)
        ns = await self._write_status(ns, remaining)
        if remaining:
            raise Requeue(min(remaining.estimate / 2 + 1, RECHECK_MAX_SECONDS))
        await self._finalize(ns)

    async def _delete_content(self, namespace: str) -> _Remaining:
        """Delete every namespaced object in ``namespace``; what is still there after."""
        remaining = _Remaining()
        now = self._clock()
        for res in self._content_resources:
            try:
                items = (await self._client.list(res, namespace)).items
                if any(not o["metadata"].get("deletionTimestamp") for o in items):
                    await self._client.delete_collection(res, namespace,
                                                         propagation="Background")
                    items = (await self._client.list(res, namespace)).items
            except ApiError as exc:
                log.warning("namespace %s: deleting %s: %s", namespace, res.plural, exc.message)
                remaining.failures.append(f"{_group_resource(res)}: {exc.message}")
                continue
            for obj in items:
                remaining.resources[_group_resource(res)] += 1
                remaining.estimate = max(remaining.estimate, self._estimate(res, obj, now))
                for finalizer in obj["metadata"].get("finalizers") or ():
                    remaining.finalizers[finalizer] += 1
        return remaining

    @staticmethod
    def _estimate(res: Resource, obj: Obj, now: datetime) -> float:
        """Seconds until a lingering object may be gone (Kubernetes' estimate)."""
        meta = obj["metadata"]
        if meta.get("finalizers"):
            return FINALIZER_ESTIMATE_SECONDS
        if res == PODS and meta.get("deletionTimestamp"):
            try:
                deadline = datetime.strptime(meta["deletionTimestamp"], _TIME).replace(
                    tzinfo=timezone.utc)
            except ValueError:
                return 0.0
            return max((deadline - now).total_seconds(), 0.0)
        return 0.0

    async def _write_status(self, ns: Obj, remaining: _Remaining) -> Obj:
        """Phase Terminating and the deletion conditions Kubernetes keeps, when they changed."""
        status = ns.get("status") or {}
        now = self._clock().strftime(_TIME)
        old = {c.get("type"): c for c in status.get("conditions") or ()}
        conditions = []
        for type_, state, reason, message in _conditions(remaining):
            before = old.get(type_) or {}
            since = before.get("lastTransitionTime") if before.get("status") == state else None
            conditions.append({"type": type_, "status": state, "reason": reason,
                               "message": message, "lastTransitionTime": since or now})
        new_status = {**status, "phase": "Terminating", "conditions": conditions}
        unchanged = status.get("phase") == "Terminating" and [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or ()] == [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in conditions]
        if unchanged:
            return ns
        try:
            return await self._client.update(NAMESPACES, {**ns, "status": new_status},
                                             subresource="status")
        except (Conflict, NotFound):
            raise Requeue(RETRY_SECONDS) from None  # the next live read sees what changed

    async def _finalize(self, ns: Obj) -> None:
        spec = ns.get("spec") or {}
        finalizers = [f for f in spec.get("finalizers") or () if f != FINALIZER]
        try:
            await self._client.update(
                NAMESPACES, {**ns, "spec": {**spec, "finalizers": finalizers}},
                subresource="finalize")
        except NotFound:
            return
        except Conflict:
            raise Requeue(RETRY_SECONDS) from None
        log.info("namespace %s: content deleted, finalized", ns["metadata"]["name"])


def _lifecycle(ns: Obj) -> tuple[Any, ...]:
    """What decides a namespace's deletion: which one it is, whether and how it is deleted."""
    meta = ns.get("metadata") or {}
    return (meta.get("uid"), meta.get("deletionTimestamp"), meta.get("finalizers"),
            (ns.get("spec") or {}).get("finalizers"))


def _conditions(remaining: _Remaining) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of each condition, worded as Kubernetes words them."""
    found = [
        (DISCOVERY_FAILURE, "False", "ResourcesDiscovered",
         "All resources successfully discovered"),
        (PARSING_FAILURE, "False", "ParsedGroupVersions",
         "All legacy kube types successfully parsed"),
    ]
    if remaining.failures:
        found.append((CONTENT_FAILURE, "True", "ContentDeletionFailed",
                      "Failed to delete all resource types, "
                      f"{len(remaining.failures)} remaining: {'; '.join(remaining.failures)}"))
    else:
        found.append((CONTENT_FAILURE, "False", "ContentDeleted",
                      "All content successfully deleted, may be waiting on finalization"))
    if remaining.resources:
        found.append((CONTENT_REMAINING, "True", "SomeResourcesRemain",
                      "Some resources are remaining: " + ", ".join(
                          f"{gr} has {n} resource instances"
                          for gr, n in sorted(remaining.resources.items()))))
    else:
        found.append((CONTENT_REMAINING, "False", "ContentRemoved",
                      "All content successfully removed"))
    if remaining.finalizers:
        found.append((FINALIZERS_REMAINING, "True", "SomeFinalizersRemain",
                      "Some content in the namespace has finalizers remaining: " + ", ".join(
                          f"{f} in {n} resource instances"
                          for f, n in sorted(remaining.finalizers.items()))))
    else:
        found.append((FINALIZERS_REMAINING, "False", "ContentHasNoFinalizers",
                      "All content-preserving finalizers finished"))
    return found
