"""What the BlueGreen and Canary shells share: reading a ReplicaSet's annotations and hash,
the key a pause is recorded under, the preamble of a pass (paused with no new ReplicaSet: a
plain sync) and its tail (the status, history cleaned once complete)."""

from __future__ import annotations

from . import revisions, scaling
from .constants import POD_TEMPLATE_HASH
from .rollout import Obj, Rollout


def annotations(obj: Obj | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def pod_hash(rs: Obj) -> str:
    return ((rs.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH, "")


def paused_key(rs: Obj, *more: object) -> str:
    """What a pause for ``rs`` is recorded as: its hash, revision (a rollback gives it a new
    revision, so an old record never stands for a later rollout) and ``more`` (a step)."""
    return "/".join([pod_hash(rs), str(revisions.revision_of(rs)), *map(str, more)])


async def synced_without_new(r: Rollout) -> bool:
    """A paused Deployment with no ReplicaSet of its template yet: sized, no rollout (True:
    the pass is done)."""
    if r.new_rs is None and r.paused:
        await scaling.sync(r)
        return True
    return False


async def finish(r: Rollout) -> None:
    """The tail of a pass: the status (no progress estimated while paused), old revisions
    cleaned once complete."""
    if r.paused:
        await r.sync_status(progress=False)
        return
    if r.complete:
        await r.cleanup_history()
    await r.sync_status()
