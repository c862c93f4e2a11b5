"""A paused or resized Deployment: its ReplicaSets scaled to its size, no rollout (Kubernetes'
sync.go ``sync`` and ``scale``), whatever the strategy.

``is_scaling_event``: an active ReplicaSet was last sized for another spec.replicas. ``sync``
then scales: the one active ReplicaSet (or, with none, the newest) to spec.replicas; with a
saturated new ReplicaSet, the old ones to 0; else, for RollingUpdate, every active ReplicaSet
in proportion (``replicas.proportional_sizes``), so a rollout under way keeps its balance.
A paused Deployment also lets old revisions go. The status is then written without estimating
progress (a paused Deployment is not late).
"""

from __future__ import annotations

from .constants import ROLLING_UPDATE
from .replicas import scale_plan
from .rollout import Rollout


def is_scaling_event(r: Rollout) -> bool:
    for rs in r.all_rss:
        view = r.view(rs)
        if view.replicas > 0 and view.desired_annotation is not None and \
                view.desired_annotation != r.replicas:
            return True
    return False


async def sync(r: Rollout) -> None:
    await scale(r)
    if r.paused:
        await r.cleanup_history()
    await r.sync_status(progress=False)


async def scale(r: Rollout) -> None:
    """Write ``replicas.scale_plan``. Sizes already right still get their desired-/max-replicas
    annotations brought up to date, so that a stale one never reads as a scaling event
    again."""
    plan = scale_plan(r.view(r.new_rs) if r.new_rs is not None else None,
                      [r.view(rs) for rs in r.old_rss], replicas=r.replicas,
                      surge=r.max_surge, rolling=r.strategy_type == ROLLING_UPDATE,
                      status_replicas=int((r.deployment.get("status") or {}).get("replicas")
                                          or 0))
    for name, size in plan:
        await r.scale(r.by_name(name), size)
