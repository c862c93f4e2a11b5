"""A Deployment's status and conditions, pure (Kubernetes' sync.go calculateStatus, progress.go
and the condition helpers of deployment_util.go).

In code order: condition helpers (``new_condition``, ``get_condition``, ``set_condition``:
lastTransitionTime kept while the status stays, the condition moved last on change;
``remove_condition``); ``calculate_status`` (counts summed over the ReplicaSets' own status,
observedGeneration, collisionCount, the Available condition); the predicates
``deployment_complete``, ``deployment_progressing`` and ``deployment_timed_out``;
``rollout_status`` (the Progressing condition of a rollout and when to look again for a
deadline: Kubernetes' syncRolloutStatus and requeueStuckDeployment); ``paused_status`` (the
Unknown Progressing condition that pausing and resuming leave, so that time spent paused never
counts against progressDeadlineSeconds).

What ``kubectl rollout status`` reads comes from here: observedGeneration, the Progressing
reason ProgressDeadlineExceeded, updatedReplicas, replicas and availableReplicas.

Times are RFC 3339 strings to the second, as Kubernetes serializes them; ``now`` is passed in.
Status dicts leave zero counts out, as Kubernetes' JSON (``omitempty``) does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from .constants import (
    AVAILABLE,
    FALSE,
    MAX_INT32,
    MIN_AVAILABLE,
    MIN_UNAVAILABLE,
    MSG_COMPLETE,
    MSG_COMPLETE_NO_RS,
    MSG_MIN_AVAILABLE,
    MSG_MIN_UNAVAILABLE,
    MSG_PAUSED,
    MSG_PROGRESSING,
    MSG_PROGRESSING_NO_RS,
    MSG_RESUMED,
    MSG_TIMED_OUT,
    MSG_TIMED_OUT_NO_RS,
    NEW_RS_AVAILABLE,
    PAUSED,
    PROGRESSING,
    REPLICA_FAILURE,
    RESUMED,
    RS_UPDATED,
    TIMED_OUT,
    TRUE,
    UNKNOWN,
)
from .replicas import desired_replicas, max_unavailable

Obj = dict[str, Any]

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
COUNTS = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
          "unavailableReplicas")


def timestamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def timestamp_after(moment: datetime) -> str:
    """``moment`` rounded up to the second: a deadline written so that it never comes
    early."""
    whole = moment.replace(microsecond=0)
    return timestamp(whole + timedelta(seconds=1) if moment.microsecond else whole)


def parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.strptime(text or "", _TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


# ---------------------------------------------------------------- conditions


def new_condition(type_: str, status: str, reason: str, message: str, now: datetime) -> Obj:
    stamp = timestamp(now)
    return {"type": type_, "status": status, "lastUpdateTime": stamp,
            "lastTransitionTime": stamp, "reason": reason, "message": message}


def get_condition(status: Obj | None, type_: str) -> Obj | None:
    for condition in (status or {}).get("conditions") or ():
        if condition.get("type") == type_:
            return condition
    return None


def set_condition(status: Obj, condition: Obj) -> None:
    """Put ``condition`` in ``status`` (in place): no change when one of its type has the same
    status and reason; its lastTransitionTime kept when the status is the same."""
    current = get_condition(status, condition["type"])
    if current is not None and current.get("status") == condition["status"] and \
            current.get("reason") == condition["reason"]:
        return
    condition = dict(condition)
    if current is not None and current.get("status") == condition["status"]:
        condition["lastTransitionTime"] = current.get("lastTransitionTime")
    status["conditions"] = [*(c for c in status.get("conditions") or ()
                              if c.get("type") != condition["type"]), condition]


def remove_condition(status: Obj, type_: str) -> None:
    conditions = [c for c in status.get("conditions") or () if c.get("type") != type_]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


# ---------------------------------------------------------------- counts


def _sum(replica_sets: Iterable[Obj | None], field: str) -> int:
    return sum(int(((rs or {}).get("status") or {}).get(field) or 0) for rs in replica_sets
               if rs is not None)


def has_progress_deadline(deployment: Obj) -> bool:
    deadline = (deployment.get("spec") or {}).get("progressDeadlineSeconds")
    return deadline is not None and deadline != MAX_INT32


def calculate_status(deployment: Obj, all_rs: list[Obj], new_rs: Obj | None,
                     now: datetime) -> Obj:
    """The status the ReplicaSets' own statuses add up to, with the Deployment's current
    conditions and the Available condition brought up to date."""
    spec_total = sum(int((rs.get("spec") or {}).get("replicas") or 0) for rs in all_rs)
    available = _sum(all_rs, "availableReplicas")
    old = deployment.get("status") or {}
    status: Obj = {
        "observedGeneration": (deployment.get("metadata") or {}).get("generation") or 0,
        "replicas": _sum(all_rs, "replicas"),
        "updatedReplicas": _sum([new_rs], "replicas"),
        "readyReplicas": _sum(all_rs, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(spec_total - available, 0),
    }
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if available >= desired_replicas(deployment) - max_unavailable(deployment):
        set_condition(status, new_condition(AVAILABLE, TRUE, MIN_AVAILABLE, MSG_MIN_AVAILABLE,
                                            now))
    else:
        set_condition(status, new_condition(AVAILABLE, FALSE, MIN_UNAVAILABLE,
                                            MSG_MIN_UNAVAILABLE, now))
    return compact(status)


def compact(status: Obj) -> Obj:
    """``status`` without zero counts (Kubernetes' omitempty), for writing and comparing."""
    return {k: v for k, v in status.items() if v not in (0, None, [], {}) or
            k == "collisionCount" and v is not None}


def same_status(a: Obj | None, b: Obj | None) -> bool:
    return compact(a or {}) == compact(b or {})


def _count(status: Obj | None, field: str) -> int:
    return int((status or {}).get(field) or 0)


# ---------------------------------------------------------------- progress


def deployment_complete(deployment: Obj, status: Obj | None) -> bool:
    """Every replica updated and available, none old, and the latest spec observed."""
    replicas = desired_replicas(deployment)
    return (_count(status, "updatedReplicas") == replicas
            and _count(status, "replicas") == replicas
            and _count(status, "availableReplicas") == replicas
            and _count(status, "observedGeneration") >=
            ((deployment.get("metadata") or {}).get("generation") or 0))


def deployment_progressing(deployment: Obj, status: Obj) -> bool:
    """Something moved since the status the Deployment has: more updated, ready or available
    replicas, or fewer old ones."""
    old = deployment.get("status") or {}
    old_old = _count(old, "replicas") - _count(old, "updatedReplicas")
    new_old = _count(status, "replicas") - _count(status, "updatedReplicas")
    return (_count(status, "updatedReplicas") > _count(old, "updatedReplicas")
            or new_old < old_old
            or _count(status, "readyReplicas") > _count(old, "readyReplicas")
            or _count(status, "availableReplicas") > _count(old, "availableReplicas"))


def deployment_timed_out(deployment: Obj, status: Obj, now: datetime) -> bool:
    """progressDeadlineSeconds passed since the Progressing condition last noted progress."""
    if not has_progress_deadline(deployment):
        return False
    condition = get_condition(status, PROGRESSING)
    if condition is None or condition.get("reason") == NEW_RS_AVAILABLE:
        return False
    if condition.get("reason") == TIMED_OUT:
        return True
    since = parse_time(condition.get("lastUpdateTime"))
    if since is None:
        return False
    deadline = int((deployment.get("spec") or {})["progressDeadlineSeconds"])
    return (now - since).total_seconds() > deadline


def _message(template: str, no_rs: str, deployment: Obj, new_rs: Obj | None) -> str:
    if new_rs is not None:
        return template.format(rs=new_rs["metadata"]["name"])
    return no_rs.format(d=deployment["metadata"]["name"])


def rollout_status(deployment: Obj, all_rs: list[Obj], new_rs: Obj | None, now: datetime,
                   *, extra: Iterable[Obj] = (), drop: Iterable[str] = (), moved: bool = False,
                   waiting: bool = False) -> tuple[Obj, float | None]:
    """The status of a Deployment in a rollout, and in how many seconds to look again for its
    progress deadline (None: no need).

    Progressing is True NewReplicaSetAvailable once complete, True ReplicaSetUpdated (its
    lastUpdateTime renewed, its lastTransitionTime kept) while replicas move, False
    ProgressDeadlineExceeded once progressDeadlineSeconds pass without; not estimated again
    after completion until a new ReplicaSet comes. ReplicaFailure mirrors the new (else an
    old) ReplicaSet's. ``drop`` conditions are removed and ``extra`` ones (a strategy's own)
    set last.

    A strategy's own pace (Corral's): ``moved``, it made a move other than counts (switched a
    Service, began a step), which counts as progress; ``waiting``, it waits on purpose (a
    timed pause, a scale-down delay), during which the deadline does not run out.
    """
    status = calculate_status(deployment, all_rs, new_rs, now)
    if not has_progress_deadline(deployment):
        remove_condition(status, PROGRESSING)
    current = get_condition(deployment.get("status"), PROGRESSING)
    complete_before = _count(status, "replicas") == _count(status, "updatedReplicas") and \
        current is not None and current.get("reason") == NEW_RS_AVAILABLE
    if has_progress_deadline(deployment) and not complete_before:
        if deployment_complete(deployment, status):
            set_condition(status, new_condition(
                PROGRESSING, TRUE, NEW_RS_AVAILABLE,
                _message(MSG_COMPLETE, MSG_COMPLETE_NO_RS, deployment, new_rs), now))
        elif moved or deployment_progressing(deployment, status):
            condition = new_condition(
                PROGRESSING, TRUE, RS_UPDATED,
                _message(MSG_PROGRESSING, MSG_PROGRESSING_NO_RS, deployment, new_rs), now)
            if current is not None:
                if current.get("status") == TRUE:
                    condition["lastTransitionTime"] = current.get("lastTransitionTime")
                remove_condition(status, PROGRESSING)
            set_condition(status, condition)
        elif not waiting and deployment_timed_out(deployment, status, now):
            set_condition(status, new_condition(
                PROGRESSING, FALSE, TIMED_OUT,
                _message(MSG_TIMED_OUT, MSG_TIMED_OUT_NO_RS, deployment, new_rs), now))
    failure = replica_failure(all_rs, new_rs)
    if failure is not None:
        set_condition(status, failure)
    else:
        remove_condition(status, REPLICA_FAILURE)
    for type_ in drop:
        remove_condition(status, type_)
    for condition in extra:
        set_condition(status, condition)
    status = compact(status)
    if same_status(deployment.get("status"), status) and not waiting:
        return status, recheck_after(deployment, status, now)
    return status, None


def recheck_after(deployment: Obj, status: Obj, now: datetime) -> float | None:
    """Seconds until the progress deadline of a rollout that shows no progress (Kubernetes'
    requeueStuckDeployment); None when complete, timed out already or without a deadline."""
    current = get_condition(deployment.get("status"), PROGRESSING)
    if not has_progress_deadline(deployment) or current is None:
        return None
    if deployment_complete(deployment, status) or current.get("reason") == TIMED_OUT:
        return None
    since = parse_time(current.get("lastUpdateTime"))
    if since is None:
        return None
    deadline = int((deployment.get("spec") or {})["progressDeadlineSeconds"])
    return max((since - now).total_seconds() + deadline, 0.0)


def replica_failure(all_rs: list[Obj], new_rs: Obj | None) -> Obj | None:
    """The ReplicaFailure condition of the new ReplicaSet, else of an old one, as the
    Deployment's (Kubernetes' getReplicaFailures)."""
    ordered = ([new_rs] if new_rs is not None else []) + \
        [rs for rs in all_rs if rs is not new_rs]
    for rs in ordered:
        condition = get_condition(rs.get("status"), REPLICA_FAILURE)
        if condition is not None:
            stamp = condition.get("lastTransitionTime")
            return {"type": REPLICA_FAILURE, "status": condition.get("status"),
                    "lastUpdateTime": stamp, "lastTransitionTime": stamp,
                    "reason": condition.get("reason"), "message": condition.get("message")}
    return None


def paused_status(deployment: Obj, now: datetime) -> Obj | None:
    """The status with the Progressing condition a pause or a resume leaves (Unknown
    DeploymentPaused / DeploymentResumed); None when nothing is to change. A timed-out
    condition stays."""
    if not has_progress_deadline(deployment):
        return None
    status = copy.deepcopy(deployment.get("status") or {})
    current = get_condition(status, PROGRESSING)
    if current is not None and current.get("reason") == TIMED_OUT:
        return None
    paused = bool((deployment.get("spec") or {}).get("paused"))
    is_paused = current is not None and current.get("reason") == PAUSED
    if paused and not is_paused:
        set_condition(status, new_condition(PROGRESSING, UNKNOWN, PAUSED, MSG_PAUSED, now))
    elif not paused and is_paused:
        set_condition(status, new_condition(PROGRESSING, UNKNOWN, RESUMED, MSG_RESUMED, now))
    else:
        return None
    return compact(status)
