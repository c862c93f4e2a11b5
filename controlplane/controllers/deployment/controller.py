"""The Deployment controller's I/O shell: informers, handlers, the work queue and
``reconcile(key)`` (Kubernetes' deployment_controller.go in small).

Flow, in code order: informers on Deployments (indexed by the Services their strategy
names), ReplicaSets (indexed by their controller's uid), Pods (the same index: pods by their
ReplicaSet's uid) and Services. Handlers only enqueue Deployment keys: a Deployment's own; a
ReplicaSet's owner (or, for an orphan, every Deployment of its namespace that selects it); a
pod's ReplicaSet's owner; the Deployments that name a Service.

``reconcile(key)``: a Deployment gone is forgotten; one being deleted has its ReplicaSets
claimed and its status synced, nothing else (Kubernetes' syncStatusOnly); until the informers show
this controller's own last writes (``Expectations``), it waits, so a slow watch never makes it
act twice on one state. Then it claims ReplicaSets (adopts matching orphans, releases owned
ones that stopped matching: ownerReference patches carrying the resourceVersion), builds a
``Rollout`` (new and old ReplicaSets, their pods, the Services its strategy names), and
either syncs a paused or resized Deployment (``scaling.sync``, unless its strategy is one that
``SCALES_ITSELF``) or hands it to the strategy of ``spec.strategy.type``
(``strategies.STRATEGIES``). A type nobody handles gets a Warning Event once per generation and
an Unknown Progressing condition, nothing else. ``Requeue`` brings the Deployment back at its
progress deadline and when a Ready pod outlasts minReadySeconds.

Every write carries the resourceVersion it was computed from (``_ApiIO``): a Conflict ends
the pass quietly (``Superseded``), and a deposed leader's late writes fail the same way.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ...api.selectors import LabelSelector
from ...client import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    SERVICES,
    ApiClient,
    Conflict,
    FuncHandler,
    Informer,
    InformerFactory,
    NotFound,
    Requeue,
    Resource,
    WorkQueue,
    key_of,
    run_controller,
)
from ...client.events import WARNING, EventRecorder
from ..pods import OWNER_INDEX, controller_ref, owner_uid
from . import status as status_
from .constants import (
    COMPONENT,
    MSG_SELECTING_ALL,
    MSG_UNKNOWN_STRATEGY,
    PROGRESSING,
    SELECTING_ALL,
    UNKNOWN,
    UNKNOWN_STRATEGY,
)
from .revisions import find_new, find_old, owner_reference
from .rollout import RECHECK_SLACK, Rollout, Superseded
from .scaling import is_scaling_event, sync
from .strategies import SCALES_ITSELF, STRATEGIES, let_go, named_services, service_keys

log = logging.getLogger(__name__)

Obj = dict[str, Any]

#: Stop waiting for the informers to show a write after this long (seconds): a lost event
#: must not stall a Deployment forever.
EXPECTATIONS_TIMEOUT = 60.0
#: Deployments by "namespace/name" of the Services their strategy names.
SERVICE_INDEX = "strategy-service"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _revision(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


@dataclass
class _Sighting:
    """A write an informer is yet to show: until its resourceVersion is reached (the
    informer has every change of its resource up to there), or the object is gone."""

    informer: Informer
    revision: int = 0
    gone: tuple[str, str] | None = None  # (key, uid) of a deletion
    since: float = field(default_factory=time.monotonic)

    def seen(self) -> bool:
        if self.gone is not None:
            obj = self.informer.get(self.gone[0])
            return obj is None or obj["metadata"].get("uid") != self.gone[1]
        return _revision(self.informer.resource_version) >= self.revision


class Expectations:
    """Per Deployment, the writes it made that its informers have not shown yet."""

    def __init__(self, *, timeout: float = EXPECTATIONS_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout = timeout
        self._clock = clock
        self._pending: dict[str, list[_Sighting]] = {}

    def wrote(self, key: str, informer: Informer, obj: Obj) -> None:
        revision = _revision((obj.get("metadata") or {}).get("resourceVersion"))
        if revision:
            self._pending.setdefault(key, []).append(
                _Sighting(informer, revision=revision, since=self._clock()))

    def deleted(self, key: str, informer: Informer, obj: Obj) -> None:
        self._pending.setdefault(key, []).append(_Sighting(
            informer, gone=(key_of(obj), obj["metadata"].get("uid", "")), since=self._clock()))

    def waiting(self, key: str) -> float | None:
        """None when every write of ``key`` was seen (or given up on); else seconds left to
        wait at most."""
        now = self._clock()
        left = [s for s in self._pending.get(key, ())
                if not s.seen() and now - s.since < self._timeout]
        if not left:
            self._pending.pop(key, None)
            return None
        self._pending[key] = left
        return max(self._timeout - (now - min(s.since for s in left)), 0.0)

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)


class DeploymentController:
    def __init__(self, client: ApiClient, *, workers: int = 2,
                 informers: InformerFactory | None = None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._workers = workers
        self._clock = clock
        self._events = EventRecorder(client, COMPONENT)
        self._queue = WorkQueue()
        self.expectations = Expectations()
        self._deployments = informers.informer(DEPLOYMENTS,
                                               indexers={SERVICE_INDEX: service_keys})
        self._sets = informers.informer(REPLICASETS, indexers={OWNER_INDEX: owner_uid})
        self._pods = informers.informer(PODS, indexers={OWNER_INDEX: owner_uid})
        self._services = informers.informer(SERVICES)
        self._deployments.add_handler(FuncHandler(
            self._enqueue, lambda old, new: self._enqueue(new), self._deployment_deleted))
        self._sets.add_handler(FuncHandler(self._rs_changed, self._rs_updated,
                                           self._rs_changed))
        self._pods.add_handler(FuncHandler(self._pod_changed,
                                           lambda old, new: self._pod_changed(new),
                                           self._pod_changed))
        self._services.add_handler(FuncHandler(self._service_changed,
                                               lambda old, new: self._service_changed(new),
                                               self._service_changed))

    @property
    def informers(self) -> list[Informer]:
        return [self._deployments, self._sets, self._pods, self._services]

    async def run(self) -> None:
        await run_controller("deployment", self.informers, self._queue, self.reconcile,
                             workers=self._workers)

    # -- handlers: keys only -------------------------------------------------------------------

    def _enqueue(self, d: Obj) -> None:
        self._queue.add(key_of(d))

    def _deployment_deleted(self, d: Obj) -> None:
        self.expectations.forget(key_of(d))

    def _owner_of(self, rs: Obj) -> str | None:
        ref = controller_ref(rs)
        if ref is None or ref.get("kind") != "Deployment":
            return None
        return f"{rs['metadata'].get('namespace')}/{ref.get('name')}"

    def _rs_changed(self, rs: Obj) -> None:
        owner = self._owner_of(rs)
        if owner is not None:
            self._queue.add(owner)
        elif controller_ref(rs) is None:
            self._enqueue_selecting(rs)

    def _rs_updated(self, old: Obj, new: Obj) -> None:
        previous = self._owner_of(old)
        if previous is not None and previous != self._owner_of(new):
            self._queue.add(previous)  # released or taken over: the old owner looks again
        self._rs_changed(new)

    def _enqueue_selecting(self, rs: Obj) -> None:
        """An orphan ReplicaSet: the Deployments that may adopt it look at it."""
        namespace = rs["metadata"].get("namespace")
        labels = rs["metadata"].get("labels") or {}
        for d in self._deployments.list():
            if d["metadata"].get("namespace") == namespace and _selects(d, labels):
                self._queue.add(key_of(d))

    def _pod_changed(self, pod: Obj) -> None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self._sets.get(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")
        if rs is not None and rs["metadata"].get("uid") == ref.get("uid"):
            owner = self._owner_of(rs)
            if owner is not None:
                self._queue.add(owner)

    def _service_changed(self, svc: Obj) -> None:
        for d in self._deployments.by_index(SERVICE_INDEX, key_of(svc)):
            self._queue.add(key_of(d))

    # -- one Deployment ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        d = self._deployments.get(key)
        if d is None:
            self.expectations.forget(key)
            return
        wait = self.expectations.waiting(key)
        if wait is not None:
            raise Requeue(wait)  # the informer's news of our write comes first, normally
        try:
            await self._sync(key, d)
        except Superseded as exc:
            log.debug("deployment %s: %s; again on the next change", key, exc)

    async def _sync(self, key: str, d: Obj) -> None:
        io = _ApiIO(self, key)
        raw = (d.get("spec") or {}).get("selector")
        try:
            selector = LabelSelector.from_object(raw)
        except ValueError as exc:
            log.warning("deployment %s: bad selector: %s", key, exc)
            return
        if selector.empty:
            await self._selecting_all(io, d)
            return
        sets = await self._claim(io, d, selector)
        new = find_new(d, sets)
        r = Rollout(deployment=d, new_rs=new, old_rss=find_old(new, sets),
                    pods={rs["metadata"]["uid"]: self._pods.by_index(OWNER_INDEX,
                                                                     rs["metadata"]["uid"])
                          for rs in sets},
                    io=io, now=self._clock(), services=self._named_services(d))
        if d["metadata"].get("deletionTimestamp"):
            # Kubernetes' syncStatusOnly: claimed, the status synced; nothing scaled or made
            await r.sync_status(progress=False)
            return
        strategy = STRATEGIES.get(r.strategy_type)
        if strategy is None:
            await self._unknown_strategy(r)
            return
        await self._forget_unknown_strategy(r)
        paused = status_.paused_status(r.deployment, r.now)
        if paused is not None:
            r.deployment = await io.write_status(r.deployment, paused)
        await r.sync_revision()
        await let_go(r)
        if (r.paused or is_scaling_event(r)) and r.strategy_type not in SCALES_ITSELF:
            await sync(r)
        else:
            await strategy(r)
        becoming = r.pods_becoming_available()
        if becoming is not None:
            r.requeue(becoming + RECHECK_SLACK)
        if r.requeue_after is not None:
            raise Requeue(r.requeue_after)

    def _named_services(self, d: Obj) -> dict[str, Obj]:
        namespace = d["metadata"].get("namespace")
        found = {name: self._services.get(f"{namespace}/{name}") for name in named_services(d)}
        return {name: svc for name, svc in found.items() if svc is not None}

    async def _claim(self, io: _ApiIO, d: Obj, selector: LabelSelector) -> list[Obj]:
        """The ReplicaSets this Deployment owns and that still match it, plus matching orphans
        adopted now; owned ones that stopped matching are released. A claim that loses its
        compare-and-swap ends the pass (Kubernetes' ClaimReplicaSets fails the sync too)."""
        meta = d["metadata"]
        uid, namespace = meta["uid"], meta.get("namespace")
        owned = []
        for rs in self._sets.by_index(OWNER_INDEX, uid):
            if selector.matches(rs["metadata"].get("labels")):
                owned.append(rs)
            elif not rs["metadata"].get("deletionTimestamp"):
                await self._set_owner(io, d, rs, adopt=False)
        orphans = [rs for rs in self._sets.list()
                   if rs["metadata"].get("namespace") == namespace
                   and controller_ref(rs) is None
                   and not rs["metadata"].get("deletionTimestamp")
                   and selector.matches(rs["metadata"].get("labels"))]
        if orphans and await self._may_adopt(d):
            for rs in orphans:
                owned.append(await self._set_owner(io, d, rs, adopt=True))
        return owned

    async def _may_adopt(self, d: Obj) -> bool:
        """Adopt only for the Deployment as it is now, not a cached one since deleted or
        replaced (Kubernetes rechecks with a live read too)."""
        meta = d["metadata"]
        try:
            fresh = await self._client.get(DEPLOYMENTS, meta.get("namespace", ""), meta["name"])
        except NotFound:
            return False
        return fresh["metadata"].get("uid") == meta["uid"] and \
            not fresh["metadata"].get("deletionTimestamp")

    async def _set_owner(self, io: _ApiIO, d: Obj, rs: Obj, *, adopt: bool) -> Obj:
        """Adopt or release ``rs``. When it changed meanwhile, ``Superseded`` ends the pass:
        going on without a ReplicaSet that may be this template's would create another."""
        refs = [r for r in rs["metadata"].get("ownerReferences") or () if not r.get("controller")]
        if adopt:
            refs.append(owner_reference(d))
        return await io.patch_replica_set(d, rs, {"metadata": {"ownerReferences": refs or None}})

    async def _selecting_all(self, io: _ApiIO, d: Obj) -> None:
        """A selector matching everything is refused (Kubernetes' SelectingAll), once per
        generation."""
        generation = d["metadata"].get("generation") or 0
        if int((d.get("status") or {}).get("observedGeneration") or 0) >= generation:
            return
        await io.record(d, WARNING, SELECTING_ALL, MSG_SELECTING_ALL)
        await io.write_status(d, {**(d.get("status") or {}), "observedGeneration": generation})

    async def _unknown_strategy(self, r: Rollout) -> None:
        """No strategy of this type: nothing is scaled or created; a Warning Event once per
        generation and an Unknown Progressing condition say why."""
        d = r.deployment
        message = MSG_UNKNOWN_STRATEGY.format(type=r.strategy_type)
        current = status_.get_condition(d.get("status"), PROGRESSING)
        told = current is not None and current.get("reason") == UNKNOWN_STRATEGY and \
            current.get("message") == message and \
            int((d.get("status") or {}).get("observedGeneration") or 0) >= \
            (d["metadata"].get("generation") or 0)
        if not told:
            await r.record(WARNING, UNKNOWN_STRATEGY, message)
        status = status_.calculate_status(d, r.all_rss, r.new_rs, r.now)
        if current is not None and current.get("message") != message:
            status_.remove_condition(status, PROGRESSING)
        status_.set_condition(status, status_.new_condition(PROGRESSING, UNKNOWN,
                                                            UNKNOWN_STRATEGY, message, r.now))
        if not status_.same_status(d.get("status"), status):
            r.deployment = await r.io.write_status(d, status_.compact(status))

    async def _forget_unknown_strategy(self, r: Rollout) -> None:
        """A type that became known again: its Unknown condition goes, so that progress is
        measured from now on, not from when the type was unknown."""
        current = status_.get_condition(r.deployment.get("status"), PROGRESSING)
        if current is None or current.get("reason") != UNKNOWN_STRATEGY:
            return
        status = copy.deepcopy(r.deployment.get("status") or {})
        status_.remove_condition(status, PROGRESSING)
        r.deployment = await r.io.write_status(r.deployment, status_.compact(status))


def _selects(d: Obj, labels: dict[str, str]) -> bool:
    try:
        selector = LabelSelector.from_object((d.get("spec") or {}).get("selector"))
    except ValueError:
        return False
    return not selector.empty and selector.matches(labels)


def _with_version(patch: Obj, obj: Obj) -> Obj:
    """``patch`` made conditional on ``obj``'s resourceVersion."""
    meta = {**(patch.get("metadata") or {}),
            "resourceVersion": obj["metadata"]["resourceVersion"]}
    return {**patch, "metadata": meta}


class _ApiIO:
    """``RolloutIO`` over the API: every write compare-and-swap, every success expected."""

    def __init__(self, controller: DeploymentController, key: str) -> None:
        self._c = controller
        self._key = key

    async def create_replica_set(self, deployment: Obj, rs: Obj) -> Obj:
        created = await self._c._client.create(REPLICASETS, rs["metadata"]["namespace"], rs)
        self._c.expectations.wrote(self._key, self._c._sets, created)
        return created

    async def get_replica_set(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self._c._client.get(REPLICASETS, namespace, name)
        except NotFound:
            return None

    async def patch_replica_set(self, deployment: Obj, rs: Obj, patch: Obj) -> Obj:
        return await self._patch(REPLICASETS, self._c._sets, rs, patch)

    async def delete_replica_set(self, deployment: Obj, rs: Obj) -> None:
        meta = rs["metadata"]
        try:
            await self._c._client.delete(REPLICASETS, meta["namespace"], meta["name"],
                                         uid=meta["uid"],
                                         resource_version=meta["resourceVersion"])
        except NotFound:
            return
        except Conflict as exc:
            raise Superseded(f"replica set {meta['name']}: {exc.reason}") from exc
        self._c.expectations.deleted(self._key, self._c._sets, rs)

    async def patch_deployment(self, deployment: Obj, patch: Obj) -> Obj:
        return await self._patch(DEPLOYMENTS, self._c._deployments, deployment, patch)

    async def patch_service(self, deployment: Obj, service: Obj, patch: Obj) -> Obj:
        return await self._patch(SERVICES, self._c._services, service, patch)

    async def _patch(self, res: Resource, cache: Informer, obj: Obj, patch: Obj) -> Obj:
        """A merge patch carrying ``obj``'s resourceVersion; the write expected in ``cache``."""
        meta = obj["metadata"]
        try:
            out = await self._c._client.patch(res, meta["namespace"], meta["name"],
                                              _with_version(patch, obj))
        except (Conflict, NotFound) as exc:
            raise Superseded(f"{res.kind} {meta['name']}: {exc.reason}") from exc
        self._c.expectations.wrote(self._key, cache, out)
        return out

    async def write_status(self, deployment: Obj, status: Obj) -> Obj:
        try:
            out = await self._c._client.update(DEPLOYMENTS, {**deployment, "status": status},
                                               subresource="status")
        except (Conflict, NotFound) as exc:
            raise Superseded(f"deployment status: {exc.reason}") from exc
        self._c.expectations.wrote(self._key, self._c._deployments, out)
        return out

    async def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        await self._c._events.record(obj, type_, reason, message)
