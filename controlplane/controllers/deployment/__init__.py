"""The Deployment controller: ReplicaSets rolled from one pod template to the next (Kubernetes'
pkg/controller/deployment in small).

Modules, pure cores first:

- ``constants``: annotation and label keys, condition types, reasons and messages, as
  Kubernetes spells them.
- ``revisions`` (pure): the pod-template-hash, revision numbers, which ReplicaSet is new, the
  new ReplicaSet to create and its annotations, old revisions to clean up.
- ``replicas`` (pure): maxSurge/maxUnavailable, how far the new ReplicaSet grows and the old
  ones shrink, proportional scaling of a Deployment resized mid-rollout.
- ``status`` (pure): DeploymentStatus, the Available and Progressing conditions, progress
  deadlines, pause and resume.
- ``rollout``: ``Rollout``, the context a strategy works on, and ``RolloutIO``, its writes.
- ``scaling``: a paused or resized Deployment (Kubernetes' strategies): scale, no rollout.
- ``rolling``, ``recreate``: Kubernetes' strategies; ``bluegreen``, ``canary``: Corral's
  (docs/deployment-strategies.md), each a pure ``decide`` and its shell; ``strategies``: the
  dispatch table.
- ``controller``: ``DeploymentController``: informers, handlers, claims, ``reconcile``.

Plug-in interface for strategies
--------------------------------

A strategy is a coroutine function ``async def rollout(r: Rollout) -> None`` in its own
module, registered under its ``spec.strategy.type`` in ``strategies.STRATEGIES``. The
controller calls it once per reconcile of a Deployment that is not paused and not being
resized (those go through ``scaling.sync``), after it claimed the ReplicaSets and synced the
new one's revision; a strategy listed in ``strategies.SCALES_ITSELF`` is called for those too
and checks ``r.paused`` itself. It must be idempotent and
level-triggered: look at ``r``, make at most the next move, write the status, return.

What ``r: Rollout`` offers (see ``rollout.Rollout``):

- state: ``r.deployment`` (never mutate; replaced after each write to it), ``r.new_rs``
  (the ReplicaSet of the current template, or None), ``r.old_rss`` (the others, oldest
  first), ``r.all_rss``, ``r.pods[rs_uid]`` (each ReplicaSet's pods, any state), ``r.now``;
  ``r.replicas``, ``r.strategy_type``, ``r.spec`` (read the strategy's own parameters under
  ``r.spec["strategy"]``), ``r.min_ready_seconds``, ``r.max_surge``/``r.max_unavailable``
  (RollingUpdate's, 0 otherwise), ``r.paused``, ``r.complete``; ``r.service(name)``, a Service
  the strategy names (``strategies.named_services``), as cached.
- reads: ``r.active_pods(rs)``, ``r.available(rs)`` (cautious available count),
  ``r.view(rs)`` (the numbers ``replicas`` functions take), ``r.by_name(name)``,
  ``r.old_pods_running()``.
- writes: ``await r.ensure_new_replica_set(replicas=None, annotations=None)`` (the new
  ReplicaSet, created under its deterministic name if missing; never a duplicate),
  ``await r.scale(rs, n)`` (True when the size changed; tells a ScalingReplicaSet Event),
  ``await r.annotate(rs, {key: value or None})`` (a strategy's bookkeeping),
  ``await r.pause(annotations)`` (spec.paused, with what it paused for),
  ``await r.switch_service(name, pod_template_hash)`` (that hash in a Service's selector),
  ``await r.cleanup_history()``, ``await r.sync_status(progress=True)`` (counts, Available,
  Progressing with the deadline), ``await r.record(type, reason, message)``.
- asks: ``r.set_condition(type, status, reason, message)`` and ``r.clear_condition(type)`` (a
  strategy's own condition, written with the next status), ``r.requeue(seconds)`` (look again
  then, e.g. after a pause step), ``r.note_progress()`` (a move that changes no count, such as
  a Service switched: progress for the deadline), ``r.hold_deadline()`` (a wait on purpose:
  the deadline does not run out meanwhile).

Writes are compare-and-swaps: when one loses, ``Superseded`` is raised; let it propagate (the
pass ends; the change that won brings the Deployment back). A strategy needing another kind of
write adds a method to ``Rollout`` backed by a ``RolloutIO`` method, keeping both rules: carry
the resourceVersion read, and report the write to ``Expectations``.
"""

from .controller import DeploymentController, Expectations
from .rollout import Rollout, RolloutIO, Strategy, Superseded
from .strategies import STRATEGIES

__all__ = ["STRATEGIES", "DeploymentController", "Expectations", "Rollout", "RolloutIO",
           "Strategy", "Superseded"]
