"""The RollingUpdate strategy (Kubernetes' rolling.go): grow the new ReplicaSet within
replicas + maxSurge, shrink the old ones keeping replicas - maxUnavailable available; one
move per pass, each pass ending in a status write; old revisions cleaned up once complete.

The new ReplicaSet's room counts each ReplicaSet's live pods where they outnumber its size (a
scale-down its ReplicaSet controller has not carried out yet), so the surge bound holds for
the pods that exist, not only for the sizes asked.
"""

from __future__ import annotations

from .constants import ROLLING_UPDATE
from .replicas import new_rs_new_replicas, old_scale_down
from .rollout import Rollout


async def rollout(r: Rollout) -> None:
    new = await r.ensure_new_replica_set()
    if await _scale_up_new(r, new) or await _scale_down_old(r):
        await r.sync_status()
        return
    if r.complete:
        await r.cleanup_history()
    await r.sync_status()


async def _scale_up_new(r: Rollout, new: dict) -> bool:
    size = int((new.get("spec") or {}).get("replicas") or 0)
    if size == r.replicas:
        return False
    if size > r.replicas:
        return await r.scale(new, r.replicas)
    footprint = sum(r.view(rs).footprint for rs in r.all_rss)
    target = new_rs_new_replicas(ROLLING_UPDATE, replicas=r.replicas, surge=r.max_surge,
                                 footprint=footprint, new_replicas=size)
    return await r.scale(new, target)


async def _scale_down_old(r: Rollout) -> bool:
    assert r.new_rs is not None
    plan = old_scale_down([r.view(rs) for rs in r.old_rss], r.view(r.new_rs),
                          replicas=r.replicas, unavailable=r.max_unavailable)
    scaled = False
    for name, size in plan:
        scaled = await r.scale(r.by_name(name), size) or scaled
    return scaled
