"""What ReplicaSets and Deployments share: replicas, a selector and a pod template.

Modelled on Kubernetes' apps validation (``ValidateReplicaSetSpec``, ``ValidateDeploymentSpec``
share their selector and template rules); the kinds add their own fields on top.
"""

from __future__ import annotations

from typing import Any

from ..errors import Cause, invalid_value, required
from ..selectors import LabelSelector
from ..strategy import Obj, Strategy
from ..validation import (
    validate_immutable,
    validate_label_selector,
    validate_nonnegative,
)
from ._common import section, set_default
from ._podspec import default_pod_spec, validate_replicated_template


class WorkloadStrategy(Strategy):
    """Status through ``/status``; every spec change bumps ``metadata.generation``."""

    has_status = True
    track_generation = True

    def initial_status(self, obj: Obj) -> None:
        obj["status"] = {}

    def default(self, obj: Obj) -> None:
        spec = section(obj, "spec")
        set_default(spec, "replicas", 1)
        default_pod_spec(section(section(spec, "template"), "spec"))

    def validate(self, obj: Obj) -> list[Cause]:
        spec: dict[str, Any] = obj.get("spec") or {}
        causes = validate_nonnegative(spec.get("replicas"), "spec.replicas")
        causes += validate_nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
        raw = spec.get("selector")
        if raw is None:
            causes.append(required("spec.selector"))
        else:
            causes += validate_label_selector(raw, "spec.selector")
            if not raw.get("matchLabels") and not raw.get("matchExpressions"):
                causes.append(invalid_value("spec.selector", raw,
                                            "empty selector is invalid for deployment"))
        try:
            selector = LabelSelector.from_object(raw)
        except ValueError:
            return causes + [invalid_value("spec.selector", raw, "invalid label selector")]
        return causes + validate_replicated_template(spec.get("template"), "spec.template",
                                                     selector)

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        """apps/v1 selectors never change: the controller would orphan its pods."""
        return self.validate(new) + validate_immutable(
            (new.get("spec") or {}).get("selector"), (old.get("spec") or {}).get("selector"),
            "spec.selector")
