"""PersistentVolume strategy: a piece of storage, cluster-scoped, Pending until the volume
controller makes it Available.

The access-mode, volume-mode and storage-class rules and cells here are shared with
PersistentVolumeClaims.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import Cause, forbidden_field, not_supported, required
from ..strategy import Column, Obj, Strategy
from ..table import AGE, Cell
from ..validation import (
    invalid_each,
    is_dns1123_subdomain,
    required_because,
    validate_enum,
    validate_immutable,
    validate_quantities,
)
from ._common import section, set_default

ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                "ReadWriteOncePod": "RWOP"}
VOLUME_MODES = ["Block", "Filesystem"]
RECLAIM_POLICIES = ["Delete", "Recycle", "Retain"]
STORAGE_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
#: The volume sources of a v1 PersistentVolumeSpec: exactly one is set.
SOURCES = ("awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "fc",
           "flexVolume", "flocker", "gcePersistentDisk", "glusterfs", "hostPath", "iscsi",
           "local", "nfs", "photonPersistentDisk", "portworxVolume", "quobyte", "rbd",
           "scaleIO", "storageos", "vsphereVolume")


def validate_storage_spec(spec: dict[str, Any], *, missing_modes: str = "") -> list[Cause]:
    """Access modes, volume mode and storage class, as PVs and PVCs both carry them;
    ``missing_modes`` explains a missing access mode."""
    modes = spec.get("accessModes") or []
    causes = [] if modes else [required_because("spec.accessModes", missing_modes)
                               if missing_modes else required("spec.accessModes")]
    for mode in modes:
        if mode not in ACCESS_MODES:
            causes.append(not_supported("spec.accessModes", mode, list(ACCESS_MODES)))
    if spec.get("volumeMode") is not None:
        causes += validate_enum(spec["volumeMode"], VOLUME_MODES, "spec.volumeMode")
    if spec.get("storageClassName"):
        causes += invalid_each("spec.storageClassName", spec["storageClassName"],
                               is_dns1123_subdomain(spec["storageClassName"]))
    return causes


def access_modes(modes: Any) -> str:
    """Kubernetes' short form ("RWO,ROX"), in its fixed order."""
    return ",".join(short for mode, short in ACCESS_MODES.items() if mode in (modes or []))


def storage_class(obj: Obj) -> str:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return (annotations.get(STORAGE_CLASS_ANNOTATION)
            or (obj.get("spec") or {}).get("storageClassName") or "")


def phase(obj: Obj, _now: datetime) -> str:
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    return (obj.get("status") or {}).get("phase") or ""


def spec_cell(key: str, default: str = "") -> Cell:
    return lambda o, _now: (o.get("spec") or {}).get(key) or default


ATTRIBUTES_CLASS = Column("VolumeAttributesClass", spec_cell("volumeAttributesClassName",
                                                             "<unset>"),
                          description="VolumeAttributesClass of the volume")
VOLUME_MODE = Column("VolumeMode", spec_cell("volumeMode", "<unset>"), priority=1,
                     description="volumeMode defines if a volume is intended to be used with "
                     "a formatted filesystem or to remain in raw block state.")
STORAGE_CLASS = Column("StorageClass", lambda o, _now: storage_class(o),
                       description="StorageClass of the volume")


class PersistentVolumeStrategy(Strategy):
    has_status = True

    def initial_status(self, obj: Obj) -> None:
        obj["status"] = {"phase": "Pending"}

    def default(self, obj: Obj) -> None:
        spec = section(obj, "spec")
        set_default(spec, "persistentVolumeReclaimPolicy", "Retain")
        set_default(spec, "volumeMode", "Filesystem")

    def validate(self, obj: Obj) -> list[Cause]:
        spec: dict[str, Any] = obj.get("spec") or {}
        causes = validate_storage_spec(spec)
        capacity = spec.get("capacity") or {}
        if not capacity:
            causes.append(required("spec.capacity"))
        elif set(capacity) != {"storage"}:
            causes.append(not_supported("spec.capacity", capacity, ["storage"]))
        causes += validate_quantities(capacity, "spec.capacity", positive=True)[1]
        causes += validate_enum(spec.get("persistentVolumeReclaimPolicy"), RECLAIM_POLICIES,
                                "spec.persistentVolumeReclaimPolicy")
        sources = [s for s in SOURCES if spec.get(s) is not None]
        if not sources:
            causes.append(required_because("spec", "must specify a volume type"))
        causes += [forbidden_field(f"spec.{s}", "may not specify more than 1 volume type")
                   for s in sources[1:]]
        return causes

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
        causes = self.validate(new)
        if any(spec.get(s) != old_spec.get(s) for s in SOURCES):
            causes.append(forbidden_field("spec.persistentvolumesource",
                                          "spec.persistentvolumesource is immutable after "
                                          "creation"))
        return causes + validate_immutable(spec.get("volumeMode"), old_spec.get("volumeMode"),
                                           "spec.volumeMode")

    def columns(self) -> list[Column]:
        def claim(o: Obj, _now: datetime) -> str:
            ref = (o.get("spec") or {}).get("claimRef")
            return f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref else ""
        return [
            Column("Capacity", lambda o, _now: str(((o.get("spec") or {}).get("capacity") or {})
                                                    .get("storage", "")),
                   description="capacity is the description of the persistent volume's "
                   "resources and capacity."),
            Column("Access Modes", lambda o, _now: access_modes((o.get("spec") or {})
                                                                .get("accessModes")),
                   description="accessModes contains all ways the volume can be mounted."),
            Column("Reclaim Policy", spec_cell("persistentVolumeReclaimPolicy"),
                   description="persistentVolumeReclaimPolicy defines what happens to a "
                   "persistent volume when released from its claim."),
            Column("Status", phase, description="phase indicates if a volume is available, "
                   "bound to a claim, or released by a claim."),
            Column("Claim", claim, description="claimRef is part of a bi-directional binding "
                   "between PersistentVolume and PersistentVolumeClaim."),
            STORAGE_CLASS,
            ATTRIBUTES_CLASS,
            Column("Reason", lambda o, _now: (o.get("status") or {}).get("reason") or "",
                   description="reason is a brief CamelCase string that describes any failure "
                   "and is meant for machine parsing and tidy display in the CLI."),
            AGE,
            VOLUME_MODE,
        ]
