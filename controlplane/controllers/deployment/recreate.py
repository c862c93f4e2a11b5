"""The Recreate strategy (Kubernetes' recreate.go): every old ReplicaSet to 0, then wait until
no old pod is left that is not finished (terminating ones included), then create or grow the
new ReplicaSet to spec.replicas. Old and new pods never run together."""

from __future__ import annotations

from .rollout import Rollout


async def rollout(r: Rollout) -> None:
    scaled = False
    for rs in list(r.old_rss):
        if int((rs.get("spec") or {}).get("replicas") or 0) > 0:
            scaled = await r.scale(rs, 0) or scaled
    if scaled or r.old_pods_running():
        await r.sync_status()
        return
    new = await r.ensure_new_replica_set()
    await r.scale(new, r.replicas)
    if r.complete:
        await r.cleanup_history()
    await r.sync_status()
