"""Node strategy: cluster-scoped; the node agent registers it and writes its status.

Unlike most kinds, a Node keeps the status it is created with (the agent registers with its
addresses and capacity), as Kubernetes' node strategy does. Pod CIDRs and the provider ID may
be set once, never changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import Cause, duplicate, forbidden_field, invalid_value
from ..strategy import Column, Obj, Strategy
from ..table import AGE, NONE, UNKNOWN, Cell
from ..validation import invalid_each, is_label_value, is_qualified_name, is_valid_cidr
from ._common import section
from ._podspec import validate_taint_effect

ROLE_PREFIX = "node-role.kubernetes.io/"
ROLE_LABEL = "kubernetes.io/role"
SET_ONCE = 'node updates may not change {} except from "" to valid'


class NodeStrategy(Strategy):
    has_status = True

    def prepare_for_create(self, obj: Obj) -> None:
        """Keep the status: the agent registers its node with it."""

    def default(self, obj: Obj) -> None:
        """Keep ``podCIDR`` and ``podCIDRs`` in step (Kubernetes' v1 conversion: when both are
        given and differ, ``podCIDR`` wins, so a change of it alone is seen, and refused, as a
        change of ``podCIDRs``); allocatable defaults to capacity."""
        spec = section(obj, "spec")
        cidr, cidrs = spec.get("podCIDR"), spec.get("podCIDRs")
        if cidr and (not cidrs or isinstance(cidrs, list) and cidrs[0] != cidr):
            spec["podCIDRs"] = [cidr]
        elif cidrs and isinstance(cidrs, list) and not cidr:
            spec["podCIDR"] = cidrs[0]
        status = obj.get("status")
        if status and status.get("capacity") and status.get("allocatable") is None:
            status["allocatable"] = dict(status["capacity"])

    def validate(self, obj: Obj) -> list[Cause]:
        spec: dict[str, Any] = obj.get("spec") or {}
        cidrs = spec.get("podCIDRs") or []
        causes: list[Cause] = []
        for i, cidr in enumerate(cidrs):
            causes += invalid_each(f"spec.podCIDRs[{i}]", cidr, is_valid_cidr(cidr))
            if cidr in cidrs[:i]:
                causes.append(duplicate(f"spec.podCIDRs[{i}]", cidr))
        if len(cidrs) > 2 or (len(cidrs) == 2 and _families(cidrs) != {4, 6}):
            causes.append(invalid_value("spec.podCIDRs", cidrs,
                                        "may specify no more than one CIDR for each IP family"))
        return causes + _validate_taints(spec.get("taints") or [])

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        causes = self.validate(new)
        spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
        if old_spec.get("podCIDRs") and spec.get("podCIDRs") != old_spec["podCIDRs"]:
            causes.append(forbidden_field("spec.podCIDRs", SET_ONCE.format("podCIDR")))
        if old_spec.get("providerID") and spec.get("providerID") != old_spec["providerID"]:
            causes.append(forbidden_field("spec.providerID", SET_ONCE.format("providerID")))
        return causes

    def field_labels(self, obj: Obj) -> dict[str, str]:
        unschedulable = (obj.get("spec") or {}).get("unschedulable")
        return {"spec.unschedulable": "true" if unschedulable else "false"}

    def columns(self) -> list[Column]:
        def info(key: str, default: str = UNKNOWN) -> Cell:
            return lambda o, _now: (((o.get("status") or {}).get("nodeInfo") or {})
                                    .get(key) or default)
        return [
            Column("Status", _status, description="The status of the node"),
            Column("Roles", _roles, description="The roles of the node"),
            AGE,
            Column("Version", info("kubeletVersion", ""),
                   description="Kubelet Version reported by the node."),
            Column("Internal-IP", _address("InternalIP"), priority=1,
                   description="List of addresses reachable to the node."),
            Column("External-IP", _address("ExternalIP"), priority=1,
                   description="List of addresses reachable to the node."),
            Column("OS-Image", info("osImage"), priority=1,
                   description="OS Image reported by the node."),
            Column("Kernel-Version", info("kernelVersion"), priority=1,
                   description="Kernel Version reported by the node."),
            Column("Container-Runtime", info("containerRuntimeVersion"), priority=1,
                   description="ContainerRuntime Version reported by the node."),
        ]


def _families(cidrs: list[str]) -> set[int]:
    return {6 if ":" in cidr else 4 for cidr in cidrs}


def _validate_taints(taints: list[dict[str, Any]]) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[tuple[str, Any]] = set()
    for i, taint in enumerate(taints):
        at = f"spec.taints[{i}]"
        key, value, effect = taint.get("key") or "", taint.get("value") or "", taint.get("effect")
        causes += invalid_each(f"{at}.key", key, is_qualified_name(key))
        causes += invalid_each(f"{at}.value", value, is_label_value(value))
        causes += validate_taint_effect(effect, f"{at}.effect", allow_empty=False)
        if (key, effect) in seen:
            causes.append(duplicate(at, f"{key}:{effect}"))
        seen.add((key, effect))
    return causes


def _status(node: Obj, _now: datetime) -> str:
    """Ready, NotReady or Unknown, with ",SchedulingDisabled" for a cordoned node."""
    ready = next((c for c in (node.get("status") or {}).get("conditions") or []
                  if c.get("type") == "Ready"), None)
    status = ["Unknown" if ready is None else
              "Ready" if ready.get("status") == "True" else "NotReady"]
    if (node.get("spec") or {}).get("unschedulable"):
        status.append("SchedulingDisabled")
    return ",".join(status)


def _roles(node: Obj, _now: datetime) -> str:
    roles = set()
    for key, value in ((node.get("metadata") or {}).get("labels") or {}).items():
        if key.startswith(ROLE_PREFIX) and key[len(ROLE_PREFIX):]:
            roles.add(key[len(ROLE_PREFIX):])
        elif key == ROLE_LABEL and value:
            roles.add(value)
    return ",".join(sorted(roles)) or NONE


def _address(kind: str) -> Cell:
    def cell(node: Obj, _now: datetime) -> str:
        addresses = (node.get("status") or {}).get("addresses") or []
        return next((a.get("address") for a in addresses if a.get("type") == kind), NONE)
    return cell
