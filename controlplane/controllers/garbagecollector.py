"""The garbage collector: dependents follow their owners, as their ownerReferences say.

Kubernetes' garbage collector (``pkg/controller/garbagecollector``) in small and level-triggered:
the dependency graph is the informer caches of every served resource, each indexed by the uids
of its objects' owners (``OWNERS_INDEX``); the API server only marks deletions (a
``deletionTimestamp``, and the ``orphan`` or ``foregroundDeletion`` finalizer the propagation
policy asks for) and this controller, on the leader, does the rest.

Flow, in code order: handlers only enqueue keys (``"<resource>[.<group>]/<namespace>/<name>"``):
an object that names owners or is being deleted with one of those finalizers; when an object
goes or drops references, its dependents and the deleting owners it named. ``reconcile(key)``:

- an owner being deleted with ``orphan``: its reference is removed from each dependent, then
  the finalizer, so the API removes the owner;
- an owner being deleted with ``foregroundDeletion``: its dependents are enqueued (each one's
  own reconcile deletes it, below), and once no dependent with ``blockOwnerDeletion`` remains
  the finalizer goes;
- an object that names owners: each owner is solid (it exists), dangling (no object of that
  uid: the cache is believed only when it shows the owner, a miss is confirmed with a live GET
  and remembered) or waiting (being deleted in foreground). With a solid owner, references to
  the others are removed; with none, the object is deleted (Foreground when a waiting owner
  wants it gone and it has dependents of its own, so deletion recurses; else Background), with
  the uid and resourceVersion of a fresh read as preconditions, as Kubernetes'
  attemptToDeleteItem does.

Every write carries the resourceVersion it was computed from, so a deposed leader's late write
fails; a lost race is retried after ``RETRY_SECONDS``. An object being deleted is otherwise left
alone: its dependents are looked at once it is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from functools import partial
from typing import Any

from ..client import (
    EVENTS,
    SERVED,
    ApiClient,
    Conflict,
    FuncHandler,
    Informer,
    InformerFactory,
    NotFound,
    Requeue,
    Resource,
    WorkQueue,
    for_kind,
    key_of,
    run_controller,
)

log = logging.getLogger(__name__)

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
#: Index of every informer here: an object's owners' uids (all its ownerReferences).
OWNERS_INDEX = "owner-uids"
#: Reconciles running at once (Kubernetes' --concurrent-gc-syncs is 20).
WORKERS = 8
#: Owners confirmed absent by a live read, remembered (a uid never comes back).
ABSENT_OWNER_CACHE = 500
#: Pause before trying again after a write lost a race with another writer (seconds).
RETRY_SECONDS = 0.2

Obj = dict[str, Any]

SOLID, DANGLING, WAITING = "solid", "dangling", "waiting"
#: What the collector watches: every served resource but Events, which own nothing and are
#: owned by nothing (they name their object in involvedObject), and whose cache would only grow.
UNDER_COLLECTION = tuple(res for res in SERVED if res is not EVENTS)


def owner_uids(obj: Obj) -> list[str]:
    """Index: the uids of every owner an object names."""
    return [ref["uid"] for ref in _refs(obj) if ref.get("uid")]


def _refs(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or ())


def _deleting_with(obj: Obj) -> set[str]:
    """The garbage collector's finalizers on an object being deleted."""
    meta = obj.get("metadata") or {}
    if not meta.get("deletionTimestamp"):
        return set()
    return {f for f in meta.get("finalizers") or () if f in (ORPHAN, FOREGROUND)}


def _deletion_state(obj: Obj) -> tuple[bool, tuple[str, ...]]:
    meta = obj.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")), tuple(meta.get("finalizers") or ())


def _resource_id(res: Resource) -> str:
    """Kubernetes' resource.group notation: "pods", "replicasets.apps"."""
    return f"{res.plural}.{res.group}" if res.group else res.plural


class GarbageCollector:
    def __init__(self, client: ApiClient, *, informers: InformerFactory | None = None,
                 workers: int = WORKERS) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._workers = workers
        self._queue = WorkQueue()
        self._resources: dict[str, Resource] = {}
        self._informers: dict[str, Informer] = {}
        self._absent: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        for res in UNDER_COLLECTION:
            rid = _resource_id(res)
            informer = informers.informer(res, indexers={OWNERS_INDEX: owner_uids})
            self._resources[rid], self._informers[rid] = res, informer
            informer.add_handler(FuncHandler(partial(self._added, rid),
                                             partial(self._updated, rid),
                                             partial(self._deleted, rid)))

    async def run(self) -> None:
        await run_controller("garbage-collector", list(self._informers.values()), self._queue,
                             self.reconcile, workers=self._workers)

    # -- handlers: keys only -------------------------------------------------------------------

    def _added(self, rid: str, obj: Obj) -> None:
        if _refs(obj) or _deleting_with(obj):
            self._queue.add(f"{rid}/{key_of(obj)}")

    def _updated(self, rid: str, old: Obj, new: Obj) -> None:
        if old["metadata"].get("uid") != new["metadata"].get("uid"):
            self._deleted(rid, old)  # replaced under the same name while unwatched
            self._added(rid, new)
            return
        if _refs(old) != _refs(new) or _deletion_state(old) != _deletion_state(new):
            self._added(rid, new)
            self._enqueue_deleting_owners(old)

    def _deleted(self, rid: str, obj: Obj) -> None:
        uid = obj["metadata"].get("uid")
        if uid:
            for dep_rid, dependent in self._dependents(uid):
                self._queue.add(f"{dep_rid}/{key_of(dependent)}")
        self._enqueue_deleting_owners(obj)

    def _enqueue_deleting_owners(self, obj: Obj) -> None:
        """Owners ``obj`` named that are being deleted: one may be waiting for it."""
        for ref in _refs(obj):
            place = self._owner_place(obj, ref)
            if place is None:
                continue
            owner = self._informers[place[0]].get(place[1])
            if owner is not None and _deleting_with(owner):
                self._queue.add(f"{place[0]}/{place[1]}")

    # -- the graph -----------------------------------------------------------------------------

    def _dependents(self, uid: str) -> list[tuple[str, Obj]]:
        return [(rid, obj) for rid, informer in self._informers.items()
                for obj in informer.by_index(OWNERS_INDEX, uid)]

    def _owner_place(self, dependent: Obj, ref: Obj) -> tuple[str, str] | None:
        """(resource id, cache key) of the owner ``ref`` names; None when it cannot name one:
        a kind not served here, or a namespaced owner of a cluster-scoped object (invalid:
        Kubernetes leaves such references alone too)."""
        res = for_kind(str(ref.get("apiVersion") or ""), str(ref.get("kind") or ""))
        if res is None or not ref.get("name"):
            return None
        namespace = (dependent.get("metadata") or {}).get("namespace") or ""
        if not res.namespaced:
            return _resource_id(res), ref["name"]
        if not namespace:
            return None
        return _resource_id(res), f"{namespace}/{ref['name']}"

    def _cached_state(self, dependent: Obj, ref: Obj) -> str | None:
        """SOLID or WAITING when the cache shows the owner; None: ask the API."""
        place = self._owner_place(dependent, ref)
        if place is None:
            return SOLID
        owner = self._informers[place[0]].get(place[1])
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return None
        return WAITING if FOREGROUND in _deleting_with(owner) else SOLID

    async def _owner_state(self, dependent: Obj, ref: Obj) -> str:
        """SOLID, DANGLING or WAITING; an owner missing from the cache is looked up live."""
        state = self._cached_state(dependent, ref)
        if state is not None:
            return state
        place = self._owner_place(dependent, ref)
        assert place is not None
        rid, cache_key = place
        absent = (rid, cache_key, str(ref.get("uid")))
        if absent in self._absent:
            self._absent.move_to_end(absent)
            return DANGLING
        res = self._resources[rid]
        namespace, _, name = cache_key.rpartition("/")
        try:
            owner = await self._client.get(res, namespace, name)
        except NotFound:
            owner = None
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            self._absent[absent] = None
            if len(self._absent) > ABSENT_OWNER_CACHE:
                self._absent.popitem(last=False)
            return DANGLING
        return WAITING if FOREGROUND in _deleting_with(owner) else SOLID

    # -- one object ----------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rid, _, cache_key = key.partition("/")
        informer = self._informers.get(rid)
        obj = informer.get(cache_key) if informer is not None else None
        if obj is None:
            return
        res = self._resources[rid]
        deleting_with = _deleting_with(obj)
        if ORPHAN in deleting_with:
            await self._orphan_dependents(res, obj)
        elif FOREGROUND in deleting_with:
            await self._await_dependents(rid, res, obj)
        elif not obj["metadata"].get("deletionTimestamp") and _refs(obj):
            await self._collect(res, obj)

    async def _orphan_dependents(self, res: Resource, owner: Obj) -> None:
        """Dependents lose their reference to ``owner``; then its ``orphan`` finalizer goes."""
        uid = owner["metadata"]["uid"]

        async def orphan(rid: str, dependent: Obj) -> None:
            refs = [r for r in _refs(dependent) if r.get("uid") != uid]
            await self._set_refs(self._resources[rid], dependent, refs)

        results = await asyncio.gather(*(orphan(rid, d) for rid, d in self._dependents(uid)),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self._remove_finalizer(res, owner, ORPHAN)

    async def _await_dependents(self, rid: str, res: Resource, owner: Obj) -> None:
        """Foreground deletion: every dependent is to be deleted; the owner goes once none
        that blocks it (``blockOwnerDeletion``) is left."""
        uid = owner["metadata"]["uid"]
        blocked = False
        for dep_rid, dependent in self._dependents(uid):
            if any(r.get("uid") == uid and r.get("blockOwnerDeletion")
                   for r in _refs(dependent)):
                blocked = True
            if not dependent["metadata"].get("deletionTimestamp"):
                self._queue.add(f"{dep_rid}/{key_of(dependent)}")
        if not blocked:
            await self._remove_finalizer(res, owner, FOREGROUND)

    async def _collect(self, res: Resource, obj: Obj) -> None:
        """An object with owners: delete it if none is left, drop references to absent ones."""
        if all(self._cached_state(obj, ref) == SOLID for ref in _refs(obj)):
            return
        meta = obj["metadata"]
        try:
            latest = await self._client.get(res, meta.get("namespace", ""), meta["name"])
        except NotFound:
            return
        lmeta = latest["metadata"]
        if lmeta.get("uid") != meta.get("uid") or lmeta.get("deletionTimestamp"):
            return  # replaced, or already on its way out: its own events bring it back
        refs = _refs(latest)
        if not refs:
            return
        states = [await self._owner_state(latest, ref) for ref in refs]
        if SOLID in states:
            keep = [ref for ref, state in zip(refs, states) if state == SOLID]
            if len(keep) < len(refs):
                await self._set_refs(res, latest, keep)
            return
        finalizers = lmeta.get("finalizers") or ()
        dependents = self._dependents(lmeta["uid"])
        if WAITING in states and dependents:
            policy = "Foreground"
            if any(FOREGROUND in _deleting_with(d) for _, d in dependents):
                # A dependent already waits for its own dependents: perhaps a cycle of owners,
                # each waiting for the other. Kubernetes breaks it the same way: this object
                # stops blocking its owners, so they may go before it does.
                latest = await self._set_refs(res, latest, [
                    {**ref, "blockOwnerDeletion": False} for ref in refs])
                if latest is None:
                    return
                lmeta = latest["metadata"]
        elif ORPHAN in finalizers:
            policy = "Orphan"
        elif FOREGROUND in finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        log.info("garbage collector: deleting %s %s (%s)", res.kind, key_of(latest), policy)
        try:
            await self._client.delete(res, lmeta.get("namespace", ""), lmeta["name"],
                                      propagation=policy, uid=lmeta["uid"],
                                      resource_version=lmeta["resourceVersion"])
        except NotFound:
            pass
        except Conflict:
            raise Requeue(RETRY_SECONDS) from None

    # -- writes --------------------------------------------------------------------------------

    async def _set_refs(self, res: Resource, obj: Obj, refs: list[Obj]) -> Obj | None:
        """The object with ``refs`` as its ownerReferences (None: it is gone)."""
        meta = obj["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"],
                              "ownerReferences": refs or None}}
        try:
            return await self._client.patch(res, meta.get("namespace", ""), meta["name"],
                                            patch)
        except NotFound:
            return None
        except Conflict:
            raise Requeue(RETRY_SECONDS) from None

    async def _remove_finalizer(self, res: Resource, obj: Obj, finalizer: str) -> None:
        meta = obj["metadata"]
        rest = [f for f in meta.get("finalizers") or () if f != finalizer]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"],
                              "finalizers": rest or None}}
        try:
            await self._client.patch(res, meta.get("namespace", ""), meta["name"], patch)
        except NotFound:
            pass
        except Conflict:
            raise Requeue(RETRY_SECONDS) from None
