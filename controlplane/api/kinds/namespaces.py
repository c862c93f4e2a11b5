"""Namespace strategy: cluster-scoped, named by a DNS label, Active until deleted.

As in Kubernetes, the "kubernetes" finalizer is added to ``spec.finalizers`` on create (not by
defaulting, so that the namespace controller may later remove it) and only the ``finalize``
subresource may change that list: updates keep the old one. A deleted namespace turns
Terminating and stays until both ``spec.finalizers`` and ``metadata.finalizers`` are empty:
the namespace controller empties it, then finalizes it.
"""

from __future__ import annotations

import copy

from ..errors import Cause, invalid_value
from ..strategy import Column, Obj, Strategy
from ..table import AGE
from ..validation import invalid_each, is_dns1123_label, is_qualified_name
from ._common import section

FINALIZER = "kubernetes"
NAME_LABEL = "kubernetes.io/metadata.name"


class NamespaceStrategy(Strategy):
    has_status = True
    name_validator = staticmethod(is_dns1123_label)

    def prepare_for_create(self, obj: Obj) -> None:
        super().prepare_for_create(obj)
        finalizers = section(obj, "spec").setdefault("finalizers", [])
        if FINALIZER not in finalizers:
            finalizers.append(FINALIZER)

    def initial_status(self, obj: Obj) -> None:
        obj["status"] = {"phase": "Active"}

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        super().prepare_for_update(new, old)
        finalizers = (old.get("spec") or {}).get("finalizers")
        if finalizers is None:
            section(new, "spec").pop("finalizers", None)
        else:
            section(new, "spec")["finalizers"] = finalizers

    def prepare_for_finalize(self, new: Obj, old: Obj) -> None:
        """``finalize`` changes spec.finalizers only; everything else stays as it was."""
        finalizers = (new.get("spec") or {}).get("finalizers")
        new.clear()
        new.update(copy.deepcopy(old))
        if finalizers:
            section(new, "spec")["finalizers"] = finalizers
        else:
            section(new, "spec").pop("finalizers", None)

    def prepare_for_delete(self, obj: Obj) -> None:
        section(obj, "status")["phase"] = "Terminating"

    def holds_deletion(self, obj: Obj) -> bool:
        return bool((obj.get("spec") or {}).get("finalizers"))

    def default(self, obj: Obj) -> None:
        """The name label lets selectors pick namespaces by name."""
        meta = section(obj, "metadata")
        section(meta, "labels")[NAME_LABEL] = meta.get("name", "")

    def validate(self, obj: Obj) -> list[Cause]:
        causes: list[Cause] = []
        for finalizer in (obj.get("spec") or {}).get("finalizers") or []:
            causes += invalid_each("spec.finalizers", finalizer, is_qualified_name(finalizer))
            if "/" not in finalizer and finalizer != FINALIZER:
                causes.append(invalid_value("spec.finalizers", finalizer, "name is neither a "
                                            "standard finalizer name nor is it fully qualified"))
        return causes

    def columns(self) -> list[Column]:
        return [Column("Status", lambda o, _now: (o.get("status") or {}).get("phase") or "",
                       description="The status of the namespace"), AGE]

    def field_labels(self, obj: Obj) -> dict[str, str]:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        return {"status.phase": status.get("phase") or "", "name": meta.get("name") or ""}
