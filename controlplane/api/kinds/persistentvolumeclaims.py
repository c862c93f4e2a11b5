"""PersistentVolumeClaim strategy: a request for storage, Pending until bound to a volume.

After creation the spec is fixed except that binding sets ``volumeName`` once and a bound
claim may ask for more (never less) storage.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from ..errors import Cause, forbidden_field, required
from ..strategy import Column, Obj, Strategy
from ..table import AGE, Cell
from ..validation import parse_quantity, validate_label_selector, validate_quantities
from ._common import section, set_default
from .persistentvolumes import (
    ATTRIBUTES_CLASS,
    STORAGE_CLASS,
    VOLUME_MODE,
    access_modes,
    phase,
    validate_storage_spec,
)

IMMUTABLE = ("spec is immutable after creation except resources.requests and "
             "volumeAttributesClassName for bound claims")


def _requests(spec: dict[str, Any]) -> dict[str, Any]:
    return (spec.get("resources") or {}).get("requests") or {}


class PersistentVolumeClaimStrategy(Strategy):
    has_status = True

    def initial_status(self, obj: Obj) -> None:
        obj["status"] = {"phase": "Pending"}

    def default(self, obj: Obj) -> None:
        set_default(section(obj, "spec"), "volumeMode", "Filesystem")

    def validate(self, obj: Obj) -> list[Cause]:
        spec: dict[str, Any] = obj.get("spec") or {}
        causes = validate_storage_spec(spec, missing_modes="at least 1 access mode is required")
        causes += validate_label_selector(spec.get("selector"), "spec.selector")
        requests = _requests(spec)
        if "storage" not in requests:
            causes.append(required("spec.resources[storage]"))
        return causes + validate_quantities(requests, "spec.resources.requests",
                                            positive=True)[1]

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
        causes = self.validate(new)
        bound = (old.get("status") or {}).get("phase") == "Bound"
        if _fixed_part(spec, old_spec, bound) != _fixed_part(old_spec, old_spec, bound):
            causes.append(forbidden_field("spec", IMMUTABLE))
        try:
            shrinks = parse_quantity(_requests(spec)["storage"]) < parse_quantity(
                _requests(old_spec)["storage"])
        except (KeyError, ValueError):
            shrinks = False
        if bound and shrinks:
            causes.append(forbidden_field("spec.resources.requests.storage",
                                          "field can not be less than previous value"))
        return causes

    def columns(self) -> list[Column]:
        def bound(key: str) -> Cell:
            """Capacity and access modes show once bound, from the status."""
            def cell(o: Obj, _now: datetime) -> str:
                if not (o.get("spec") or {}).get("volumeName"):
                    return ""
                status = o.get("status") or {}
                if key == "capacity":
                    return str((status.get("capacity") or {}).get("storage", ""))
                return access_modes(status.get("accessModes"))
            return cell
        return [
            Column("Status", phase, description="phase represents the current phase of "
                   "PersistentVolumeClaim."),
            Column("Volume", lambda o, _now: (o.get("spec") or {}).get("volumeName") or "",
                   description="volumeName is the binding reference to the PersistentVolume "
                   "backing this claim."),
            Column("Capacity", bound("capacity"), description="capacity represents the actual "
                   "resources of the underlying volume."),
            Column("Access Modes", bound("accessModes"), description="accessModes contains "
                   "the actual access modes the volume backing the PVC has."),
            STORAGE_CLASS,
            ATTRIBUTES_CLASS,
            AGE,
            VOLUME_MODE,
        ]


def _fixed_part(spec: dict[str, Any], old_spec: dict[str, Any], bound: bool) -> dict[str, Any]:
    """The spec without what an update may change: requests and the attributes class of a
    bound claim, and a volume name the claim did not have yet."""
    fixed = copy.deepcopy(spec)
    if bound:
        fixed.pop("volumeAttributesClassName", None)
        section(fixed, "resources").pop("requests", None)
    if not old_spec.get("volumeName"):
        fixed.pop("volumeName", None)
    return fixed
