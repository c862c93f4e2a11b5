"""What one kind adds to the generic registry: defaulting, validation, status handling, columns.

Modelled on Kubernetes' registry strategies (``pkg/registry/*/strategy.go``): the registry does
everything common (metadata, resourceVersion, uid, timestamps, generation, storage); a
``Strategy`` only says what is special about its kind. Methods that prepare mutate the object
in place; validators never mutate and return causes (``errors.Cause``), empty when valid.
"""

from __future__ import annotations

from typing import Any

from .errors import Cause
from .table import Column, default_columns
from .validation import is_dns1123_subdomain

__all__ = ["Column", "Obj", "Strategy"]

Obj = dict[str, Any]


class Strategy:
    """Defaults are those of a kind with a plain spec and no status subresource."""

    #: ``status`` is written only through the ``/status`` subresource.
    has_status: bool = False
    #: ``metadata.generation`` counts changes to everything but metadata and status.
    track_generation: bool = False
    #: Messages for an invalid ``metadata.name`` (Kubernetes' ``ValidateNameFunc``).
    name_validator = staticmethod(is_dns1123_subdomain)

    def prepare_for_create(self, obj: Obj) -> None:
        """Reset what a client may not set on create (status, for kinds with a subresource)."""
        if self.has_status:
            obj.pop("status", None)
            self.initial_status(obj)

    def initial_status(self, obj: Obj) -> None:
        """The status a new object starts with (Pods: phase Pending)."""

    def prepare_for_update(self, new: Obj, old: Obj) -> None:
        """Keep what the main endpoint may not change (status, for kinds with a subresource)."""
        if self.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)

    def prepare_for_status_update(self, new: Obj, old: Obj) -> None:
        """The status endpoint changes status only: everything else comes from ``old``."""
        status = new.get("status")
        new.clear()
        new.update({k: v for k, v in old.items() if k != "status"})
        if status is not None:
            new["status"] = status

    def default(self, obj: Obj) -> None:
        """Fill defaults, as Kubernetes' defaulting does on decode (create and update)."""

    def validate(self, obj: Obj) -> list[Cause]:
        """Kind-specific checks of a new or updated object (metadata is checked generically)."""
        return []

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        """Checks of an update: immutable fields plus ``validate``."""
        return self.validate(new)

    def validate_status_update(self, new: Obj, old: Obj) -> list[Cause]:
        return []

    def columns(self) -> list[Column]:
        """Every column after NAME, AGE included where Kubernetes shows it; the table code adds
        only NAME, first (unless a column has format "name": Events put NAME last).

        Kinds without a printer get Kubernetes' default: "Created At"."""
        return default_columns()

    def field_labels(self, obj: Obj) -> dict[str, str]:
        """Fields a fieldSelector may name, beyond metadata.name and metadata.namespace.

        Must accept an empty object: ``field_label_names`` asks it for the names."""
        return {}

    def field_label_names(self) -> set[str]:
        return set(self.field_labels({}))

    def graceful_delete(self, obj: Obj, grace_period: int | None) -> int:
        """Seconds this object lingers with a deletionTimestamp before it is removed (0: now)."""
        return 0

    def prepare_for_delete(self, obj: Obj) -> None:
        """Mark an object that starts lingering with a deletionTimestamp (Namespaces: phase
        Terminating)."""

    def holds_deletion(self, obj: Obj) -> bool:
        """Whether something of the kind besides ``metadata.finalizers`` keeps a deleted object
        (Namespaces: ``spec.finalizers``, emptied through ``finalize``)."""
        return False

    def prepare_for_finalize(self, new: Obj, old: Obj) -> None:
        """The ``finalize`` subresource of kinds that have one: what it may change of ``old``."""
        new.clear()
        new.update(old)
