"""What controllers ask of a Pod: who controls it, whether it counts, whether it is ready."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

Obj = dict[str, Any]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: Index names shared by every controller of a process (one informer per resource): an index
#: is defined once, here, so two controllers never file pods differently under one name.
NODE_INDEX = "node"
OWNER_INDEX = "controller-uid"


def node_of(pod: Obj) -> list[str]:
    """Index: the node a pod is bound to."""
    name = (pod.get("spec") or {}).get("nodeName")
    return [name] if name else []


def owner_uid(obj: Obj) -> list[str]:
    """Index: the uid of an object's controller."""
    ref = controller_ref(obj)
    return [ref["uid"]] if ref and ref.get("uid") else []


def controller_ref(obj: Obj) -> Obj | None:
    """The ownerReference with controller=true, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def is_active(pod: Obj) -> bool:
    """Counts toward a workload's replicas: not finished, not being deleted."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and \
        not (pod.get("metadata") or {}).get("deletionTimestamp")


def pod_ready(pod: Obj, min_ready_seconds: int = 0, *,
              now: Callable[[], datetime] = _utcnow) -> bool:
    """Ready=True, and for ``min_ready_seconds`` at least (Kubernetes' "available")."""
    return available_in(pod, min_ready_seconds, now=now) == 0.0


def available_in(pod: Obj, min_ready_seconds: int, *,
                 now: Callable[[], datetime] = _utcnow) -> float | None:
    """Seconds until a Ready pod counts as available by ``pod_ready(pod, min_ready_seconds)``
    (0: it does already); None when it is not Ready, so there is nothing to wait for. What a
    controller waiting out minReadySeconds requeues after."""
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") != "True":
            return None
        if min_ready_seconds <= 0:
            return 0.0
        try:
            since = datetime.strptime(condition.get("lastTransitionTime") or "",
                                      "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return None  # pod_ready never counts it available either
        left = since + timedelta(seconds=min_ready_seconds) - now()
        return max(left.total_seconds(), 0.0)
    return None
