"""DeploymentStatus and its conditions, pure (deployment_util_test.go TestDeploymentComplete,
TestDeploymentProgressing, TestDeploymentTimedOut; progress.go's syncRolloutStatus and
requeueStuckDeployment; sync.go's checkPausedConditions)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from controlplane.controllers.deployment.status import (
    calculate_status,
    deployment_complete,
    deployment_progressing,
    deployment_timed_out,
    get_condition,
    new_condition,
    paused_status,
    rollout_status,
    set_condition,
)

T0 = datetime(2016, 1, 1, 0, 0, 0, tzinfo=timezone.utc)


def at(minutes: int = 0, seconds: int = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment(replicas: int = 10, *, unavailable: object = 0, surge: object = 0,
               status: dict | None = None, generation: int = 1, deadline: int | None = 600,
               paused: bool = False) -> dict:
    spec: dict = {"replicas": replicas, "paused": paused, "strategy": {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}
    if deadline is not None:
        spec["progressDeadlineSeconds"] = deadline
    return {"metadata": {"name": "web", "generation": generation}, "spec": spec,
            "status": status or {}}


def counts(replicas: int, updated: int, ready: int, available: int, observed: int = 1) -> dict:
    return {"replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": available, "observedGeneration": observed}


def rs(name: str, spec: int, replicas: int, ready: int, available: int) -> dict:
    return {"metadata": {"name": name}, "spec": {"replicas": spec},
            "status": {"replicas": replicas, "readyReplicas": ready,
                       "availableReplicas": available}}


@pytest.mark.parametrize("name, desired, current, updated, available, unavail, surge, expect", [
    ("not complete: min but not all pods become available", 5, 5, 5, 4, 1, 0, False),
    ("not complete: min availability is not honored", 5, 5, 5, 3, 1, 0, False),
    ("complete", 5, 5, 5, 5, 0, 0, True),
    ("not complete: all pods are available but not updated", 5, 5, 4, 5, 0, 0, False),
    ("not complete: still running old pods", 1, 2, 1, 1, 0, 1, False),
    ("not complete: one replica deployment never comes up", 1, 1, 1, 0, 1, 1, False),
])
def test_deployment_complete(name: str, desired: int, current: int, updated: int,
                             available: int, unavail: int, surge: int, expect: bool) -> None:
    d = deployment(desired, unavailable=unavail, surge=surge,
                   status=counts(current, updated, 0, available))
    assert deployment_complete(d, d["status"]) is expect


def test_complete_needs_the_latest_generation_observed() -> None:
    d = deployment(5, generation=2, status=counts(5, 5, 5, 5, observed=1))
    assert not deployment_complete(d, d["status"])


@pytest.mark.parametrize("name, before, after, expect", [
    ("progressing: updated pods", (10, 4, 4, 4), (10, 6, 4, 4), True),
    ("not progressing", (10, 4, 4, 4), (10, 4, 4, 4), False),
    ("progressing: old pods removed", (10, 4, 6, 6), (8, 4, 6, 6), True),
    ("not progressing: less new pods", (10, 7, 3, 3), (10, 6, 3, 3), False),
    ("progressing: less overall but more new pods", (10, 4, 7, 7), (8, 8, 5, 5), True),
    ("progressing: more ready pods", (10, 10, 9, 8), (10, 10, 10, 8), True),
    ("progressing: more available pods", (10, 10, 10, 9), (10, 10, 10, 10), True),
])
def test_deployment_progressing(name: str, before: tuple, after: tuple, expect: bool) -> None:
    d = deployment(status=counts(*before))
    assert deployment_progressing(d, counts(*after)) is expect


def progressing(reason: str, since: datetime, status: str = "True") -> dict:
    return {"type": "Progressing", "status": status, "reason": reason,
            "lastUpdateTime": stamp(since), "lastTransitionTime": stamp(since)}


@pytest.mark.parametrize("name, deadline, reason, since, now, expect", [
    ("no progressDeadlineSeconds - no timeout", None, "", at(1, 9), at(1, 20), False),
    ("infinite progressDeadlineSeconds - no timeout", 2**31 - 1, "", at(1, 9), at(1, 20),
     False),
    ("10s deadline, 11s passed", 10, "", at(1, 9), at(1, 20), True),
    ("10s deadline, 9s passed", 10, "", at(1, 11), at(1, 20), False),
    ("previous status was a complete deployment", 10, "NewReplicaSetAvailable", at(0, 0),
     at(5, 0), False),
    ("timed out already", 10, "ProgressDeadlineExceeded", at(1, 19), at(1, 20), True),
])
def test_deployment_timed_out(name: str, deadline: int | None, reason: str, since: datetime,
                              now: datetime, expect: bool) -> None:
    d = deployment(deadline=deadline, status={"conditions": [progressing(reason, since)]})
    assert deployment_timed_out(d, d["status"], now) is expect


def test_set_condition_keeps_transition_time_while_the_status_stays() -> None:
    status: dict = {}
    set_condition(status, new_condition("Available", "True", "A", "m", at(0)))
    set_condition(status, new_condition("Available", "True", "A", "m2", at(1)))
    assert get_condition(status, "Available")["message"] == "m"  # same status and reason
    set_condition(status, new_condition("Available", "True", "B", "m3", at(2)))
    cond = get_condition(status, "Available")
    assert (cond["reason"], cond["lastTransitionTime"], cond["lastUpdateTime"]) == \
        ("B", stamp(at(0)), stamp(at(2)))
    set_condition(status, new_condition("Available", "False", "C", "m4", at(3)))
    assert get_condition(status, "Available")["lastTransitionTime"] == stamp(at(3))


def test_calculate_status_sums_replica_sets_and_sets_availability() -> None:
    d = deployment(10, unavailable=2, surge=3, generation=4,
                   status={"collisionCount": 1, "observedGeneration": 3})
    old = rs("web-old", 6, 7, 6, 6)
    new = rs("web-new", 5, 4, 3, 2)
    status = calculate_status(d, [old, new], new, at(0))
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 4, "replicas": 11, "updatedReplicas": 4, "readyReplicas": 9,
        "availableReplicas": 8, "unavailableReplicas": 3, "collisionCount": 1}
    available = get_condition(status, "Available")
    assert (available["status"], available["reason"], available["message"]) == \
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    short = calculate_status(d, [rs("web-old", 10, 10, 7, 7)], None, at(0))
    available = get_condition(short, "Available")
    assert (available["status"], available["reason"], available["message"]) == \
        ("False", "MinimumReplicasUnavailable",
         "Deployment does not have minimum availability.")
    assert "updatedReplicas" not in short  # zero counts are left out, as Kubernetes' JSON


def test_rollout_status_progress_then_complete() -> None:
    created = progressing("NewReplicaSetCreated", at(0))
    d = deployment(3, unavailable=1, surge=1,
                   status={**counts(3, 0, 3, 3), "conditions": [created]})
    new = rs("web-2", 1, 1, 0, 0)
    status, recheck = rollout_status(d, [rs("web-1", 3, 3, 3, 3), new], new, at(0, 30))
    cond = get_condition(status, "Progressing")
    assert (cond["reason"], cond["message"]) == \
        ("ReplicaSetUpdated", 'ReplicaSet "web-2" is progressing.')
    assert cond["lastUpdateTime"] == stamp(at(0, 30))
    assert cond["lastTransitionTime"] == stamp(at(0))  # still True since creation
    assert recheck is None  # something changed: written, and looked at again then

    d["status"] = status
    new = rs("web-2", 3, 3, 3, 3)
    done, _ = rollout_status(d, [rs("web-1", 0, 0, 0, 0), new], new, at(1))
    cond = get_condition(done, "Progressing")
    assert (cond["status"], cond["reason"], cond["message"]) == \
        ("True", "NewReplicaSetAvailable", 'ReplicaSet "web-2" has successfully progressed.')
    # once complete, progress is not estimated again (nothing to time out)
    d["status"] = done
    later, recheck = rollout_status(d, [rs("web-1", 0, 0, 0, 0), new], new, at(100))
    assert later == done and recheck is None


def test_rollout_status_times_out_and_says_when_to_look() -> None:
    created = progressing("NewReplicaSetCreated", at(0))
    stuck = rs("web-2", 1, 1, 0, 0)
    d = deployment(3, unavailable=1, surge=1, deadline=10,
                   status={**counts(4, 1, 3, 3), "conditions": [created]})
    old = rs("web-1", 3, 3, 3, 3)
    status, recheck = rollout_status(d, [old, stuck], stuck, at(0, 1))
    assert recheck is None  # the status changed (written; the write brings it back)
    d["status"] = status
    status, recheck = rollout_status(d, [old, stuck], stuck, at(0, 4))
    assert recheck == 6.0  # nothing changed: look again at the deadline
    assert get_condition(status, "Progressing")["reason"] == "NewReplicaSetCreated"
    status, recheck = rollout_status(d, [old, stuck], stuck, at(0, 11))
    cond = get_condition(status, "Progressing")
    assert (cond["status"], cond["reason"], cond["message"]) == \
        ("False", "ProgressDeadlineExceeded", 'ReplicaSet "web-2" has timed out progressing.')
    assert recheck is None
    d["status"] = status
    assert rollout_status(d, [old, stuck], stuck, at(5))[1] is None  # timed out: no recheck


def test_no_deadline_no_progressing_condition() -> None:
    d = deployment(1, unavailable=1, deadline=None,
                   status={"conditions": [progressing("ReplicaSetUpdated", at(0))]})
    status, recheck = rollout_status(d, [rs("a", 1, 1, 1, 1)], None, at(1))
    assert get_condition(status, "Progressing") is None and recheck is None


def test_replica_failure_is_mirrored() -> None:
    failing = rs("web-2", 1, 0, 0, 0)
    failing["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True",
                                        "reason": "FailedCreate", "message": "quota",
                                        "lastTransitionTime": stamp(at(0))}]
    d = deployment(1, unavailable=1)
    status, _ = rollout_status(d, [failing], failing, at(1))
    cond = get_condition(status, "ReplicaFailure")
    assert (cond["reason"], cond["message"]) == ("FailedCreate", "quota")
    d["status"] = status
    healed, _ = rollout_status(d, [rs("web-2", 1, 1, 1, 1)], None, at(2))
    assert get_condition(healed, "ReplicaFailure") is None


def test_pause_and_resume_conditions() -> None:
    d = deployment(paused=True, status={"conditions": [progressing("ReplicaSetUpdated", at(0))]})
    paused = paused_status(d, at(1))
    cond = get_condition(paused, "Progressing")
    assert (cond["status"], cond["reason"], cond["message"]) == \
        ("Unknown", "DeploymentPaused", "Deployment is paused")
    d["status"] = paused
    assert paused_status(d, at(2)) is None  # said already
    d["spec"]["paused"] = False
    resumed = get_condition(paused_status(d, at(3)), "Progressing")
    assert (resumed["status"], resumed["reason"], resumed["message"],
            resumed["lastUpdateTime"]) == \
        ("Unknown", "DeploymentResumed", "Deployment is resumed", stamp(at(3)))
    timed_out = deployment(paused=True, status={"conditions": [
        progressing("ProgressDeadlineExceeded", at(0), "False")]})
    assert paused_status(timed_out, at(1)) is None  # a timeout is not overwritten
    assert paused_status(deployment(paused=True, deadline=None), at(1)) is None
