"""Small helpers every kind's defaulting uses."""

from __future__ import annotations

from typing import Any


def set_default(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Fill ``key`` when unset or null, as Kubernetes' defaulting fills nil pointers."""
    if mapping.get(key) is None:
        mapping[key] = value


def section(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """The mapping at ``obj[key]``, created when absent, for defaulting to fill in."""
    value = obj.get(key)
    if not isinstance(value, dict):
        value = obj[key] = {}
    return value
