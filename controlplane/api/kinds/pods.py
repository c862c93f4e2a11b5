"""Pod strategy: a pod's spec is fixed once created, except a few fields; the kubelet (our node
agent) writes its status.

Flow: defaulting and validation (the spec rules live in ``_podspec``, shared with templates),
the update rule that keeps the spec immutable (Kubernetes' "pod updates may not change fields
other than ..."), how long a deleted pod lingers, then the printer: the READY, STATUS and
RESTARTS cells follow ``printPod`` in Kubernetes' printers.go.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import Cause, forbidden_field, invalid_value
from ..strategy import Column, Obj, Strategy
from ..table import AGE, NONE, parse_time, since
from ._common import section, set_default
from ._podspec import (
    containers,
    default_pod_spec,
    default_requests_from_limits,
    qos_class,
    validate_pod_spec,
)

TERMINAL_PHASES = ("Succeeded", "Failed")
DEFAULT_GRACE_PERIOD_S = 30
NODE_LOST = "NodeLost"
UPDATABLE = ("pod updates may not change fields other than `spec.containers[*].image`,"
             "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
             "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
             "(allow it to be set to 1 if it was previously negative)")


class PodStrategy(Strategy):
    has_status = True

    def initial_status(self, obj: Obj) -> None:
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}

    def default(self, obj: Obj) -> None:
        spec = section(obj, "spec")
        default_pod_spec(spec)
        default_requests_from_limits(spec)
        set_default(spec, "enableServiceLinks", True)
        set_default(spec, "priority", 0)

    def validate(self, obj: Obj) -> list[Cause]:
        return validate_pod_spec(obj.get("spec") or {}, "spec")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
        causes = self.validate(new) + _validate_deadline_update(new_spec, old_spec)
        if not _tolerations_kept(new_spec, old_spec):
            causes.append(forbidden_field(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds"))
        new_fixed, old_fixed = _fixed_part(new_spec), _fixed_part(old_spec)
        if (old_spec.get("terminationGracePeriodSeconds") or 0) < 0 \
                and new_spec.get("terminationGracePeriodSeconds") == 1:
            new_fixed["terminationGracePeriodSeconds"] = old_spec["terminationGracePeriodSeconds"]
        changed = [f"spec.{key}" for key in sorted(set(new_fixed) | set(old_fixed))
                   if new_fixed.get(key) != old_fixed.get(key)]
        if changed:
            causes.append(forbidden_field("spec", f"{UPDATABLE}\n  changed: {', '.join(changed)}"))
        return causes

    def graceful_delete(self, obj: Obj, grace_period: int | None) -> int:
        """Kubernetes' pod rule: an unscheduled or finished pod goes at once; otherwise the
        requested period or the pod's own, never negative."""
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        if not spec.get("nodeName") or status.get("phase") in TERMINAL_PHASES:
            return 0
        if grace_period is None:
            grace_period = spec.get("terminationGracePeriodSeconds")
        if grace_period is None:
            grace_period = DEFAULT_GRACE_PERIOD_S
        return 1 if grace_period < 0 else grace_period

    def field_labels(self, obj: Obj) -> dict[str, str]:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        return {
            "spec.nodeName": spec.get("nodeName") or "",
            "spec.restartPolicy": spec.get("restartPolicy") or "",
            "spec.schedulerName": spec.get("schedulerName") or "",
            "spec.serviceAccountName": spec.get("serviceAccountName") or "",
            "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
            "status.phase": status.get("phase") or "",
            "status.podIP": _pod_ip(status),
            "status.nominatedNodeName": status.get("nominatedNodeName") or "",
        }

    def columns(self) -> list[Column]:
        return [
            Column("Ready", lambda o, _now: _summary(o).ready,
                   description="The aggregate readiness state of this pod for accepting traffic."),
            Column("Status", lambda o, _now: _summary(o).reason,
                   description="The aggregate status of the containers in this pod."),
            Column("Restarts", _restarts, description=(
                "The number of times the containers in this pod have been restarted and when "
                "the last container in this pod has restarted.")),
            AGE,
            Column("IP", lambda o, _now: _pod_ip(o.get("status") or {}) or NONE, priority=1,
                   description="IP address allocated to the pod."),
            Column("Node", lambda o, _now: (o.get("spec") or {}).get("nodeName") or NONE,
                   priority=1, description="The node the pod is bound to."),
            Column("Nominated Node",
                   lambda o, _now: (o.get("status") or {}).get("nominatedNodeName") or NONE,
                   priority=1, description="The node the scheduler nominated for preemption."),
            Column("Readiness Gates", _readiness_gates, priority=1,
                   description="Readiness gates whose condition is True, of all gates."),
        ]


# ------------------------------------------------------------------ updates

def _validate_deadline_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    """activeDeadlineSeconds may be set or shortened, never removed or lengthened."""
    before, after = old.get("activeDeadlineSeconds"), new.get("activeDeadlineSeconds")
    if before is None or after == before:
        return []
    if after is None:
        return [invalid_value("spec.activeDeadlineSeconds", after,
                              "must not update from a positive integer to nil value")]
    if after > before:
        return [invalid_value("spec.activeDeadlineSeconds", after,
                              "must be less than or equal to previous value")]
    return []


def _tolerations_kept(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Only additions: every old toleration is still there (its seconds aside)."""
    def plain(t: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in t.items() if k != "tolerationSeconds"}
    remaining = [plain(t) for t in new.get("tolerations") or []]
    return all(plain(t) in remaining for t in old.get("tolerations") or [])


def _fixed_part(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec without what a pod update may change (its validity is checked apart)."""
    fixed = {k: v for k, v in copy.deepcopy(spec).items()
             if k not in ("activeDeadlineSeconds", "tolerations")}
    for container in containers(fixed):
        container.pop("image", None)
    return fixed


# ------------------------------------------------------------------ printing

@dataclass(frozen=True)
class _Summary:
    ready: str
    reason: str
    restarts: int
    last_restart: datetime | None


def _terminated_reason(terminated: dict[str, Any]) -> str:
    if terminated.get("reason"):
        return terminated["reason"]
    if terminated.get("signal"):
        return f"Signal:{terminated['signal']}"
    return f"ExitCode:{terminated.get('exitCode') or 0}"


def _condition_true(status: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _latest(current: datetime | None, container_status: dict[str, Any]) -> datetime | None:
    """The later of ``current`` and when this container last terminated."""
    finished = parse_time(((container_status.get("lastState") or {}).get("terminated") or {})
                          .get("finishedAt"))
    if finished is None or (current is not None and current >= finished):
        return current
    return finished


def _summary(pod: Obj) -> _Summary:
    """What ``kubectl get pods`` shows, by Kubernetes' rules: init containers first (a failing
    or waiting one names the status), then app containers (the last waiting or terminated
    reason wins), "Terminating" over all once deletion has begun."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    if any(c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated"
           for c in status.get("conditions") or []):
        reason = "SchedulingGated"
    init_specs = spec.get("initContainers") or []
    sidecars = {c.get("name") for c in init_specs if c.get("restartPolicy") == "Always"}
    total = len(spec.get("containers") or []) + len(sidecars)
    ready = restarts = sidecar_restarts = 0
    last = sidecar_last = None
    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting") or {}
        restarts += cs.get("restartCount") or 0
        last = _latest(last, cs)
        if cs.get("name") in sidecars:
            sidecar_restarts += cs.get("restartCount") or 0
            sidecar_last = _latest(sidecar_last, cs)
        if terminated is not None and (terminated.get("exitCode") or 0) == 0:
            continue
        if cs.get("name") in sidecars and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        if terminated is not None:
            reason = "Init:" + _terminated_reason(terminated)
        elif waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    if not initializing or _condition_true(status, "Initialized"):
        restarts, last = sidecar_restarts, sidecar_last
        running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            terminated, waiting = state.get("terminated"), state.get("waiting") or {}
            restarts += cs.get("restartCount") or 0
            last = _latest(last, cs)
            if waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None:
                reason = _terminated_reason(terminated)
            elif cs.get("ready") and state.get("running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        if status.get("reason") == NODE_LOST:
            reason = "Unknown"
        elif phase not in TERMINAL_PHASES:
            reason = "Terminating"
    return _Summary(f"{ready}/{total}", reason, restarts, last)


def _restarts(pod: Obj, now: datetime) -> str:
    summary = _summary(pod)
    if summary.restarts and summary.last_restart is not None:
        return f"{summary.restarts} ({since(summary.last_restart, now)} ago)"
    return str(summary.restarts)


def _pod_ip(status: dict[str, Any]) -> str:
    ips = status.get("podIPs") or []
    return (ips[0].get("ip") if ips else status.get("podIP")) or ""


def _readiness_gates(pod: Obj, _now: datetime) -> str:
    gates = (pod.get("spec") or {}).get("readinessGates") or []
    if not gates:
        return NONE
    status = pod.get("status") or {}
    true = sum(1 for g in gates if _condition_true(status, g.get("conditionType")))
    return f"{true}/{len(gates)}"
