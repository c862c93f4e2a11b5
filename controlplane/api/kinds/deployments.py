"""Deployment strategy: a ReplicaSet's rules plus the rollout settings.

Defaults are those of apps/v1 (``SetDefaults_Deployment``): RollingUpdate with 25% surge and
25% unavailable, ten old ReplicaSets kept, a 600-second progress deadline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import Cause, forbidden_field, invalid_value, not_supported, required
from ..strategy import Column, Obj
from ..table import AGE, count
from ..validation import (
    invalid_each,
    is_valid_percent,
    validate_nonnegative,
    validate_positive,
)
from ._common import section, set_default
from ._podspec import template_columns
from ._workload import WorkloadStrategy

STRATEGY_TYPES = ["Recreate", "RollingUpdate"]


def _int_or_percent(value: Any) -> int:
    """The number in 3 or "25%" (Kubernetes' ``getIntOrPercentValue``)."""
    if isinstance(value, str):
        digits = value[:-1] if value.endswith("%") else value
        return int(digits) if digits.isdigit() else 0
    return value or 0


def _validate_int_or_percent(value: Any, path: str) -> list[Cause]:
    if isinstance(value, str):
        causes = invalid_each(path, value, is_valid_percent(value))
        if not causes and _int_or_percent(value) > 100:
            causes.append(invalid_value(path, value, "must not be greater than 100%"))
        return causes
    return validate_nonnegative(value, path)


def _validate_strategy(strategy: dict[str, Any]) -> list[Cause]:
    kind, rolling = strategy.get("type"), strategy.get("rollingUpdate")
    if kind == "Recreate":
        if rolling is not None:
            return [forbidden_field("spec.strategy.rollingUpdate",
                                    "may not be specified when strategy `type` is 'Recreate'")]
        return []
    if kind != "RollingUpdate":
        return [not_supported("spec.strategy", kind, STRATEGY_TYPES)]
    if rolling is None:
        return [required("spec.strategy.rollingUpdate")]
    at = "spec.strategy.rollingUpdate"
    surge, unavailable = rolling.get("maxSurge"), rolling.get("maxUnavailable")
    causes = _validate_int_or_percent(unavailable, f"{at}.maxUnavailable")
    causes += _validate_int_or_percent(surge, f"{at}.maxSurge")
    if _int_or_percent(unavailable) == 0 and _int_or_percent(surge) == 0:
        causes.append(invalid_value(f"{at}.maxUnavailable", unavailable,
                                    "may not be 0 when `maxSurge` is 0"))
    return causes


def _ready(obj: Obj, _now: datetime) -> str:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return f"{status.get('readyReplicas') or 0}/{spec.get('replicas') or 0}"


class DeploymentStrategy(WorkloadStrategy):
    def default(self, obj: Obj) -> None:
        super().default(obj)
        spec = section(obj, "spec")
        strategy = section(spec, "strategy")
        set_default(strategy, "type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = section(strategy, "rollingUpdate")
            set_default(rolling, "maxUnavailable", "25%")
            set_default(rolling, "maxSurge", "25%")
        set_default(spec, "revisionHistoryLimit", 10)
        set_default(spec, "progressDeadlineSeconds", 600)

    def validate(self, obj: Obj) -> list[Cause]:
        spec: dict[str, Any] = obj.get("spec") or {}
        causes = super().validate(obj) + _validate_strategy(spec.get("strategy") or {})
        causes += validate_nonnegative(spec.get("revisionHistoryLimit"),
                                       "spec.revisionHistoryLimit")
        deadline = spec.get("progressDeadlineSeconds")
        if deadline is not None:
            causes += validate_positive(deadline, "spec.progressDeadlineSeconds")
            if deadline <= (spec.get("minReadySeconds") or 0):
                causes.append(invalid_value("spec.progressDeadlineSeconds", deadline,
                                            "must be greater than minReadySeconds"))
        return causes

    def columns(self) -> list[Column]:
        return [
            Column("Ready", _ready, description="Number of the pod with ready state"),
            Column("Up-to-date", count("status", "updatedReplicas"), description=(
                "Total number of non-terminated pods targeted by this deployment that have "
                "the desired template spec.")),
            Column("Available", count("status", "availableReplicas"), description=(
                "Total number of available pods (ready for at least minReadySeconds) "
                "targeted by this deployment.")),
            AGE,
            *template_columns(),
        ]
