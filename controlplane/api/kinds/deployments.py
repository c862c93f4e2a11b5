"""Deployment strategy: a ReplicaSet's rules plus the rollout settings.

Defaults are those of apps/v1 (``SetDefaults_Deployment``): RollingUpdate with 25% surge and
25% unavailable, ten old ReplicaSets kept, a 600-second progress deadline.

Besides Kubernetes' Recreate and RollingUpdate, ``spec.strategy.type`` may be one of Corral's
extensions (docs/deployment-strategies.md): ``BlueGreen`` with ``spec.strategy.blueGreen``
(``activeService`` required) or ``Canary`` with ``spec.strategy.canary.steps``. Each strategy
accepts only its own settings block, as Kubernetes forbids rollingUpdate under Recreate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import Cause, forbidden_field, invalid_value, not_supported, required
from ..strategy import Column, Obj
from ..table import AGE, count
from ..validation import (
    inclusive_range_error,
    invalid_each,
    is_dns1035_label,
    is_valid_percent,
    validate_nonnegative,
    validate_positive,
)
from ._common import section, set_default
from ._podspec import template_columns
from ._workload import WorkloadStrategy

STRATEGY_TYPES = ["BlueGreen", "Canary", "Recreate", "RollingUpdate"]
#: The settings block each strategy type takes; the others are forbidden with it.
SETTINGS = {"RollingUpdate": "rollingUpdate", "BlueGreen": "blueGreen", "Canary": "canary"}
#: BlueGreen keeps the old side this long after promotion unless told otherwise.
SCALE_DOWN_DELAY_SECONDS = 30


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
    kind = strategy.get("type")
    if kind not in STRATEGY_TYPES:
        return [not_supported("spec.strategy", kind, STRATEGY_TYPES)]
    causes = [forbidden_field(f"spec.strategy.{block}",
                              f"may not be specified when strategy `type` is '{kind}'")
              for other, block in SETTINGS.items()
              if other != kind and strategy.get(block) is not None]
    settings = SETTINGS.get(kind)
    if settings is not None and strategy.get(settings) is None \
            and kind != "Canary":  # a Canary without steps goes straight to 100%
        return causes + [required(f"spec.strategy.{settings}")]
    validate = {"RollingUpdate": _validate_rolling, "BlueGreen": _validate_blue_green,
                "Canary": _validate_canary}.get(kind)
    return causes + (validate(strategy.get(settings) or {}) if validate else [])


def _validate_rolling(rolling: dict[str, Any]) -> list[Cause]:
    at = "spec.strategy.rollingUpdate"
    surge, unavailable = rolling.get("maxSurge"), rolling.get("maxUnavailable")
    causes = _validate_int_or_percent(unavailable, f"{at}.maxUnavailable")
    causes += _validate_int_or_percent(surge, f"{at}.maxSurge")
    if _int_or_percent(unavailable) == 0 and _int_or_percent(surge) == 0:
        causes.append(invalid_value(f"{at}.maxUnavailable", unavailable,
                                    "may not be 0 when `maxSurge` is 0"))
    return causes


def _validate_blue_green(blue_green: dict[str, Any]) -> list[Cause]:
    at = "spec.strategy.blueGreen"
    active, preview = blue_green.get("activeService"), blue_green.get("previewService")
    causes = [required(f"{at}.activeService")] if not active else \
        invalid_each(f"{at}.activeService", active, is_dns1035_label(active))
    if preview:
        causes += invalid_each(f"{at}.previewService", preview, is_dns1035_label(preview))
        if preview == active:
            causes.append(invalid_value(f"{at}.previewService", preview,
                                        "must differ from activeService"))
    for field in ("autoPromotionSeconds", "scaleDownDelaySeconds"):
        causes += validate_nonnegative(blue_green.get(field), f"{at}.{field}")
    return causes


def _validate_canary(canary: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for i, step in enumerate(canary.get("steps") or ()):
        at = f"spec.strategy.canary.steps[{i}]"
        given = [k for k in ("setWeight", "pause") if step.get(k) is not None]
        if len(given) != 1:
            causes.append(invalid_value(at, step, "exactly one of setWeight and pause must "
                                                  "be specified"))
            continue
        weight = step.get("setWeight")
        if weight is not None and not 0 <= weight <= 100:
            causes.append(invalid_value(f"{at}.setWeight", weight,
                                        inclusive_range_error(0, 100)))
        if step.get("pause") is not None:
            causes += validate_nonnegative(step["pause"].get("duration"),
                                           f"{at}.pause.duration")
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
        elif strategy["type"] == "BlueGreen":
            blue_green = section(strategy, "blueGreen")
            set_default(blue_green, "autoPromotionEnabled", True)
            set_default(blue_green, "scaleDownDelaySeconds", SCALE_DOWN_DELAY_SECONDS)
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
