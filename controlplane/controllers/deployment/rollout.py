"""``Rollout``: one reconcile's view of a Deployment and the operations a strategy uses.

The controller builds a ``Rollout`` per reconcile from its informers (the Deployment, its
claimed ReplicaSets split into the new one and the old ones, their pods) and hands it to the
strategy of ``spec.strategy.type``. Reads are plain attributes and methods over that snapshot;
writes go through ``RolloutIO`` (the API, in the controller; a fake in tests) and update the
snapshot with what the server answered, so later steps of the same pass build on them.

Every write is a compare-and-swap on the resourceVersion the snapshot holds. When one loses
(Conflict) or its object is gone (NotFound), ``RolloutIO`` raises ``Superseded``: the pass
ends there, and the change that beat it, being a watch event too, brings the Deployment back
with fresh state. Strategies let ``Superseded`` propagate.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ...client import AlreadyExists, ApiError
from ...client.events import NORMAL, WARNING
from ..pods import available_in, controller_ref, is_active, pod_ready
from . import replicas as math_
from . import revisions
from . import status as status_
from .constants import (
    DESIRED_REPLICAS,
    FAILED_RS_CREATE,
    FALSE,
    FOUND_NEW_RS,
    MAX_REPLICAS,
    MSG_CREATED,
    MSG_FAILED_CREATE,
    MSG_FOUND,
    MSG_SCALED,
    MSG_SCALED_UP_NEW,
    NEW_RS_CREATED,
    POD_TEMPLATE_HASH,
    PROGRESSING,
    RECREATE,
    REVISION,
    ROLLING_UPDATE,
    SCALING_REPLICA_SET,
    TRUE,
)
from .replicas import ReplicaSetView

log = logging.getLogger(__name__)

Obj = dict[str, Any]
#: A little past a deadline, so that a look at it finds the time passed.
RECHECK_SLACK = 0.1


class Superseded(Exception):
    """A write lost its compare-and-swap or its object is gone: end this pass; the watch
    event of whatever changed brings the Deployment back."""


class RolloutIO(Protocol):
    """The writes (and the one live read) a rollout makes; the controller's implementation
    carries resourceVersions (compare-and-swap), raises ``Superseded`` on Conflict or
    NotFound, and remembers each write so the next pass waits until its informers show it."""

    async def create_replica_set(self, deployment: Obj, rs: Obj) -> Obj:
        """Create ``rs``; ``AlreadyExists`` when its name is taken."""

    async def get_replica_set(self, namespace: str, name: str) -> Obj | None:
        """A live read (not the cache), None when absent."""

    async def patch_replica_set(self, deployment: Obj, rs: Obj, patch: Obj) -> Obj:
        """Merge ``patch`` into ``rs`` if it is still at its resourceVersion."""

    async def delete_replica_set(self, deployment: Obj, rs: Obj) -> None:
        """Delete ``rs`` if it is still at its resourceVersion (gone already is fine)."""

    async def patch_deployment(self, deployment: Obj, patch: Obj) -> Obj:
        """Merge ``patch`` into the Deployment (not its status) if unchanged since read."""

    async def patch_service(self, deployment: Obj, service: Obj, patch: Obj) -> Obj:
        """Merge ``patch`` into ``service`` (a Service the Deployment's strategy names) if it
        is still at its resourceVersion."""

    async def write_status(self, deployment: Obj, status: Obj) -> Obj:
        """Replace the Deployment's status if unchanged since read."""

    async def record(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        """An Event about ``obj`` (never fails)."""


Strategy = Callable[["Rollout"], Awaitable[None]]


@dataclass
class Rollout:
    """A Deployment in one reconcile: what is, and the verbs to change it."""

    #: The Deployment (replaced by the server's answer after each write to it).
    deployment: Obj
    #: The ReplicaSet whose template is the Deployment's, if there is one yet.
    new_rs: Obj | None
    #: Every other ReplicaSet the Deployment owns, oldest first.
    old_rss: list[Obj]
    #: Pods of each ReplicaSet, by the ReplicaSet's uid (any state: check ``is_active``).
    pods: dict[str, list[Obj]]
    io: RolloutIO
    now: datetime
    #: Seconds after which the controller looks at this Deployment again (None: only on
    #: change); ``requeue`` keeps the earliest asked for.
    requeue_after: float | None = None
    #: Conditions the strategy sets (``set_condition``), written with the next status.
    conditions: list[Obj] = field(default_factory=list)
    #: The Services the strategy names (``spec.strategy.blueGreen``), by name, as cached;
    #: absent when they do not exist. Replaced after each write to one.
    services: dict[str, Obj] = field(default_factory=dict)
    #: Condition types the strategy removes (``clear_condition``) with the next status.
    dropped: list[str] = field(default_factory=list)
    #: The strategy moved other than by counts (``note_progress``): progress, for the deadline.
    moved: bool = False
    #: The strategy waits on purpose (``hold_deadline``): the deadline does not run out.
    waiting: bool = False

    # ------------------------------------------------------------ reading

    @property
    def name(self) -> str:
        return str(self.deployment["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.deployment["metadata"].get("namespace") or "")

    @property
    def spec(self) -> Obj:
        return self.deployment.get("spec") or {}

    @property
    def replicas(self) -> int:
        """spec.replicas."""
        return math_.desired_replicas(self.deployment)

    @property
    def strategy_type(self) -> str:
        return math_.strategy_type(self.deployment)

    @property
    def max_surge(self) -> int:
        return math_.max_surge(self.deployment)

    @property
    def max_unavailable(self) -> int:
        return math_.max_unavailable(self.deployment)

    @property
    def min_ready_seconds(self) -> int:
        return int(self.spec.get("minReadySeconds") or 0)

    @property
    def paused(self) -> bool:
        return bool(self.spec.get("paused"))

    @property
    def all_rss(self) -> list[Obj]:
        """The old ReplicaSets, then the new one."""
        return [*self.old_rss, *([self.new_rs] if self.new_rs is not None else [])]

    @property
    def complete(self) -> bool:
        """The Deployment's status says its rollout is done (Kubernetes'
        DeploymentComplete over the status it has)."""
        return status_.deployment_complete(self.deployment, self.deployment.get("status"))

    def active_pods(self, rs: Obj) -> list[Obj]:
        """Pods of ``rs`` that count: neither terminating nor finished."""
        return [p for p in self.pods.get(rs["metadata"]["uid"], ()) if is_active(p)]

    def available(self, rs: Obj) -> int:
        """Available replicas of ``rs``, cautiously: the least of what its status reports, its
        size, and its active pods Ready for minReadySeconds as seen now. Scaling down by a
        count no view disputes keeps replicas - maxUnavailable available even while one of
        the views lags."""
        spec, status = rs.get("spec") or {}, rs.get("status") or {}
        min_ready = max(int(spec.get("minReadySeconds") or 0), self.min_ready_seconds)
        ready = sum(1 for p in self.active_pods(rs)
                    if pod_ready(p, min_ready, now=lambda: self.now))
        return max(min(int(status.get("availableReplicas") or 0),
                       int(spec.get("replicas") or 0), ready), 0)

    def view(self, rs: Obj) -> ReplicaSetView:
        """The numbers replica arithmetic reads of ``rs``."""
        return ReplicaSetView(
            name=rs["metadata"]["name"], replicas=int((rs.get("spec") or {}).get("replicas") or 0),
            available=self.available(rs), pods=len(self.active_pods(rs)),
            created=revisions.creation_order(rs),
            desired_annotation=revisions.annotation_int(rs, DESIRED_REPLICAS),
            max_annotation=revisions.annotation_int(rs, MAX_REPLICAS))

    @property
    def next_revision(self) -> int:
        """The revision a new ReplicaSet (or one rolled back to) gets: one past the old ones'."""
        return revisions.max_revision(self.old_rss) + 1

    def service(self, name: str) -> Obj | None:
        """A Service the strategy names, as cached (never mutate it); None when missing."""
        return self.services.get(name)

    def by_name(self, name: str) -> Obj:
        for rs in self.all_rss:
            if rs["metadata"]["name"] == name:
                return rs
        raise KeyError(name)

    def old_pods_running(self) -> bool:
        """Any pod of an old ReplicaSet not finished, terminating ones included (what
        Recreate waits out), or old ReplicaSets still reporting replicas."""
        if any(int((rs.get("status") or {}).get("replicas") or 0) for rs in self.old_rss):
            return True
        new_uid = self.new_rs["metadata"]["uid"] if self.new_rs is not None else None
        return any((p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                   for uid, pods in self.pods.items() if uid != new_uid for p in pods)

    def pods_becoming_available(self) -> float | None:
        """Seconds until the next Ready pod outlasts minReadySeconds (None: none waits)."""
        waits = [w for rs in self.all_rss for p in self.active_pods(rs)
                 if (w := available_in(p, self.min_ready_seconds, now=lambda: self.now))]
        return min(waits) if waits else None

    def requeue(self, after: float) -> None:
        """Have the controller look again in ``after`` seconds (the earliest wins)."""
        after = max(after, 0.0)
        if self.requeue_after is None or after < self.requeue_after:
            self.requeue_after = after

    def note_progress(self) -> None:
        """This pass moved the rollout on without changing counts (a Service switched, a step
        begun): Progressing notes progress, so the deadline counts from now."""
        self.moved = True

    def hold_deadline(self) -> None:
        """The strategy waits on purpose (a timed pause, a delay): progressDeadlineSeconds does
        not run out meanwhile; the move that ends the wait notes progress."""
        self.waiting = True

    # ------------------------------------------------------------ acting

    async def record(self, type_: str, reason: str, message: str) -> None:
        await self.io.record(self.deployment, type_, reason, message)

    def set_condition(self, type_: str, status: str, reason: str, message: str) -> None:
        """A condition for the next status written (a strategy's own: ``Progressing`` and
        ``Available`` are the controller's)."""
        self.conditions.append(status_.new_condition(type_, status, reason, message, self.now))

    def clear_condition(self, type_: str) -> None:
        """Remove a condition of the strategy's own with the next status written."""
        self.dropped.append(type_)

    async def sync_revision(self) -> None:
        """Bring the new ReplicaSet's annotations (copied from the Deployment, the next
        revision: on a rollback the old ReplicaSet gets it and keeps its old one in
        revision-history) and minReadySeconds up to date, the Deployment's revision annotation
        with it, and note a first Progressing condition (Kubernetes' getNewReplicaSet for an
        existing one)."""
        new = self.new_rs
        if new is None:
            return
        revision = self.next_revision
        annotations = revisions.new_rs_annotations(
            self.deployment, (new.get("metadata") or {}).get("annotations"), revision,
            exists=True)
        min_ready = self.min_ready_seconds
        if annotations is not None or int((new.get("spec") or {}).get("minReadySeconds")
                                          or 0) != min_ready:
            patch: Obj = {"spec": {"minReadySeconds": min_ready}}
            if annotations is not None:
                patch["metadata"] = {"annotations": annotations}
            self._replace(await self.io.patch_replica_set(self.deployment, new, patch))
            new = self.new_rs
            assert new is not None
        await self._set_deployment_revision(
            ((new.get("metadata") or {}).get("annotations") or {}).get(REVISION, ""))
        if status_.has_progress_deadline(self.deployment) and \
                status_.get_condition(self.deployment.get("status"), PROGRESSING) is None:
            await self._note_progressing(FOUND_NEW_RS, MSG_FOUND.format(rs=new["metadata"]["name"]))

    async def ensure_new_replica_set(self, replicas: int | None = None,
                                     annotations: dict[str, str] | None = None) -> Obj:
        """The new ReplicaSet, created now if there is none (Kubernetes' getNewReplicaSet).

        Created as ``<deployment>-<pod-template-hash>`` with ``replicas`` (default: what
        RollingUpdate or Recreate allows now; 0 for other strategies) and the strategy's
        ``annotations`` beside its own (an existing one is returned as it is), so that a
        second create of the same template, by a racing pass or another leader, is refused;
        and only after a compare-and-swap on the Deployment (a patch changing nothing but
        carrying its resourceVersion) confirmed this pass reads it as it is; the Deployment's
        revision annotation follows once the ReplicaSet exists (never a revision ahead of it). A refused create whose ReplicaSet is ours with
        this template is that ReplicaSet; any other is a hash collision: status.collisionCount
        goes up (a new name next pass) and the pass ends.
        """
        if self.new_rs is not None:
            return self.new_rs
        d = self.deployment
        collisions = (d.get("status") or {}).get("collisionCount")
        pod_hash = revisions.template_hash(self.spec.get("template"), collisions)
        revision = self.next_revision
        if replicas is None:
            replicas = 0
            if self.strategy_type in (ROLLING_UPDATE, RECREATE):
                replicas = math_.new_rs_new_replicas(
                    self.strategy_type, replicas=self.replicas, surge=self.max_surge,
                    footprint=sum(self.view(rs).footprint for rs in self.old_rss),
                    new_replicas=0)
        rs = revisions.build_new_replica_set(d, pod_template_hash=pod_hash, replicas=replicas,
                                             revision=revision, max_surge=self.max_surge)
        if annotations:
            rs["metadata"]["annotations"] = {**rs["metadata"]["annotations"], **annotations}
        name = rs["metadata"]["name"]
        # A create carries no resourceVersion. So first a compare-and-swap on the Deployment
        # (a check alone: no field changes): a pass on a stale Deployment, a deposed leader's
        # late one, stops here instead of creating.
        self.deployment = await self.io.patch_deployment(d, {"metadata": {}})
        try:
            created = await self.io.create_replica_set(self.deployment, rs)
            existed = False
        except AlreadyExists:
            created = await self._existing(name)
            existed = True
        except ApiError as exc:
            await self._failed_create(name, exc)
            raise
        self.new_rs = created
        await self._set_deployment_revision(
            ((created.get("metadata") or {}).get("annotations") or {}).get(REVISION, ""))
        if not existed and replicas > 0:
            await self.record(NORMAL, SCALING_REPLICA_SET,
                              MSG_SCALED_UP_NEW.format(rs=name, to=replicas))
        if not existed and status_.has_progress_deadline(self.deployment):
            await self._note_progressing(NEW_RS_CREATED, MSG_CREATED.format(rs=name))
        return created

    async def _existing(self, name: str) -> Obj:
        """The ReplicaSet whose name a create found taken, if it is ours for this template;
        else count a collision and end the pass."""
        d = self.deployment
        found = await self.io.get_replica_set(self.namespace, name)
        if found is None:
            raise Superseded(f"replica set {name} went away meanwhile")
        ref = controller_ref(found)
        if ref is not None and ref.get("uid") == d["metadata"]["uid"] and \
                revisions.equal_ignore_hash((found.get("spec") or {}).get("template"),
                                            self.spec.get("template")):
            return found
        status = copy.deepcopy(d.get("status") or {})
        before = int(status.get("collisionCount") or 0)
        status["collisionCount"] = before + 1
        log.info("deployment %s/%s: hash collision with replica set %s; collisionCount %d -> %d",
                 self.namespace, self.name, name, before, before + 1)
        self.deployment = await self.io.write_status(d, status)
        raise Superseded(f"hash collision with replica set {name}")

    async def _failed_create(self, name: str, exc: ApiError) -> None:
        message = MSG_FAILED_CREATE.format(rs=name, error=exc.message or exc)
        if status_.has_progress_deadline(self.deployment):
            status = copy.deepcopy(self.deployment.get("status") or {})
            status_.set_condition(status, status_.new_condition(
                PROGRESSING, FALSE, FAILED_RS_CREATE, message, self.now))
            try:
                self.deployment = await self.io.write_status(self.deployment, status)
            except (Superseded, ApiError):
                pass  # the event below still tells
        await self.record(WARNING, FAILED_RS_CREATE, message)

    async def _set_deployment_revision(self, revision: str) -> None:
        annotations = (self.deployment.get("metadata") or {}).get("annotations") or {}
        if not revision or annotations.get(REVISION) == revision:
            return
        self.deployment = await self.io.patch_deployment(
            self.deployment, {"metadata": {"annotations": {REVISION: revision}}})

    async def _note_progressing(self, reason: str, message: str) -> None:
        status = copy.deepcopy(self.deployment.get("status") or {})
        status_.set_condition(status, status_.new_condition(PROGRESSING, TRUE, reason, message,
                                                            self.now))
        self.deployment = await self.io.write_status(self.deployment, status_.compact(status))

    async def scale(self, rs: Obj, replicas: int) -> bool:
        """Set ``rs``'s spec.replicas (and its desired-/max-replicas annotations to this
        Deployment's size); True when the size changed, which is told in a ScalingReplicaSet
        Event. A no-op when both are so already."""
        before = int((rs.get("spec") or {}).get("replicas") or 0)
        desired = self.replicas
        annotations = revisions.replicas_annotations(
            (rs.get("metadata") or {}).get("annotations"), desired, desired + self.max_surge)
        if before == replicas and annotations is None:
            return False
        patch: Obj = {"spec": {"replicas": replicas}}
        if annotations is not None:
            patch["metadata"] = {"annotations": annotations}
        self._replace(await self.io.patch_replica_set(self.deployment, rs, patch))
        if before == replicas:
            return False
        await self.record(NORMAL, SCALING_REPLICA_SET, MSG_SCALED.format(
            direction="up" if replicas > before else "down", rs=rs["metadata"]["name"],
            frm=before, to=replicas))
        return True

    async def annotate(self, rs: Obj, annotations: dict[str, str | None]) -> Obj:
        """Set (None: remove) annotations of ``rs``, a strategy's own bookkeeping; no write
        when they are so already."""
        current = (rs.get("metadata") or {}).get("annotations") or {}
        if all(current.get(k) == v for k, v in annotations.items()):
            return rs
        out = await self.io.patch_replica_set(self.deployment, rs,
                                              {"metadata": {"annotations": annotations}})
        self._replace(out)
        return out

    async def pause(self, annotations: dict[str, str]) -> None:
        """Set spec.paused (what ``kubectl rollout pause`` does) and, in the same write,
        ``annotations`` of the Deployment: what the strategy paused for."""
        self.deployment = await self.io.patch_deployment(
            self.deployment, {"metadata": {"annotations": annotations},
                              "spec": {"paused": True}})

    async def switch_service(self, name: str, pod_template_hash: str) -> bool:
        """Set ``pod-template-hash: <pod_template_hash>`` in the selector of the Service
        ``name`` (its other keys are left as they are); True when it changed. The Service must
        exist (``service(name)``)."""
        svc = self.services[name]
        if ((svc.get("spec") or {}).get("selector") or {}).get(POD_TEMPLATE_HASH) == \
                pod_template_hash:
            return False
        self.services[name] = await self.io.patch_service(
            self.deployment, svc, {"spec": {"selector": {POD_TEMPLATE_HASH: pod_template_hash}}})
        return True

    async def unswitch_service(self, name: str) -> bool:
        """Remove ``pod-template-hash`` from the selector of the Service ``name`` (as cached;
        True when it changed): a Service a strategy no longer manages selects every Pod of
        the Deployment again."""
        svc = self.services.get(name)
        if svc is None or POD_TEMPLATE_HASH not in ((svc.get("spec") or {}).get("selector")
                                                    or {}):
            return False
        self.services[name] = await self.io.patch_service(
            self.deployment, svc, {"spec": {"selector": {POD_TEMPLATE_HASH: None}}})
        return True

    async def annotate_deployment(self, annotations: dict[str, str | None]) -> None:
        """Set (None: remove) annotations of the Deployment, a strategy's own bookkeeping; no
        write when they are so already."""
        current = (self.deployment.get("metadata") or {}).get("annotations") or {}
        if all(current.get(k) == v for k, v in annotations.items()):
            return
        self.deployment = await self.io.patch_deployment(
            self.deployment, {"metadata": {"annotations": annotations}})

    async def cleanup_history(self) -> None:
        """Delete the old ReplicaSets beyond revisionHistoryLimit (only empty ones, lowest
        revision first)."""
        for rs in revisions.history_to_clean(self.deployment, self.old_rss):
            await self.io.delete_replica_set(self.deployment, rs)
            self.old_rss = [o for o in self.old_rss
                            if o["metadata"]["uid"] != rs["metadata"]["uid"]]

    async def sync_status(self, *, progress: bool = True) -> None:
        """Write the status the ReplicaSets add up to, if it changed. ``progress``: estimate
        the Progressing condition too (a rollout; off for a paused or resized Deployment), and
        when nothing changed, look again at the progress deadline."""
        d = self.deployment
        if progress:
            status, recheck = status_.rollout_status(
                d, self.all_rss, self.new_rs, self.now, extra=self.conditions,
                drop=self.dropped, moved=self.moved, waiting=self.waiting)
            if recheck is not None:
                self.requeue(recheck + RECHECK_SLACK)
        else:
            status = status_.calculate_status(d, self.all_rss, self.new_rs, self.now)
            for type_ in self.dropped:
                status_.remove_condition(status, type_)
            for condition in self.conditions:
                status_.set_condition(status, condition)
            status = status_.compact(status)
        if not status_.same_status(d.get("status"), status):
            self.deployment = await self.io.write_status(d, status)

    def _replace(self, rs: Obj) -> None:
        uid = rs["metadata"]["uid"]
        if self.new_rs is not None and self.new_rs["metadata"]["uid"] == uid:
            self.new_rs = rs
        self.old_rss = [rs if o["metadata"]["uid"] == uid else o for o in self.old_rss]
