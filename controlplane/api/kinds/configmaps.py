"""ConfigMap strategy: named pieces of configuration, text in ``data``, bytes in
``binaryData``.

The key, size and ``immutable`` rules here are shared with Secrets, as in Kubernetes.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from ..errors import Cause, forbidden_field, invalid_value
from ..strategy import Column, Obj, Strategy
from ..table import AGE
from ..validation import base64_error, invalid_each, is_config_map_key, too_long

MAX_SIZE_B = 1024 * 1024
IMMUTABLE = "field is immutable when `immutable` is set"


def validate_keys(data: dict[str, Any], path: str, other: dict[str, Any],
                  other_name: str) -> list[Cause]:
    """Keys are file names; no key may also be in the other map of the object."""
    causes: list[Cause] = []
    for key in sorted(data):
        at = f"{path}[{key}]"
        causes += invalid_each(at, key, is_config_map_key(key))
        if key in other:
            causes.append(invalid_value(at, key, f"duplicate of key present in {other_name}"))
    return causes


def encoded_sizes(data: dict[str, Any], path: str) -> tuple[int, list[Cause]]:
    """Total decoded size of base64 values, and the causes of values that are not base64."""
    size, causes = 0, []
    for key, value in sorted(data.items()):
        error = base64_error(value)
        if error:
            causes.append(invalid_value(f"{path}[{key}]", "<value omitted>", error))
        else:
            size += len(base64.b64decode(value))
    return size, causes


def size_limit(size: int, path: str) -> list[Cause]:
    return [too_long(path, MAX_SIZE_B)] if size > MAX_SIZE_B else []


def validate_immutable_data(new: Obj, old: Obj, fields: tuple[str, ...]) -> list[Cause]:
    """Once ``immutable: true``, it stays so and ``fields`` never change."""
    if not old.get("immutable"):
        return []
    causes = [] if new.get("immutable") else [forbidden_field("immutable", IMMUTABLE)]
    return causes + [forbidden_field(f, IMMUTABLE) for f in fields
                     if (new.get(f) or {}) != (old.get(f) or {})]


class ConfigMapStrategy(Strategy):
    def validate(self, obj: Obj) -> list[Cause]:
        data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
        causes = validate_keys(data, "data", binary, "binaryData")
        causes += validate_keys(binary, "binaryData", data, "data")
        binary_size, bad = encoded_sizes(binary, "binaryData")
        text_size = sum(len(v.encode()) for v in data.values())
        return causes + bad + size_limit(text_size + binary_size, "")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return self.validate(new) + validate_immutable_data(new, old, ("data", "binaryData"))

    def columns(self) -> list[Column]:
        def data(o: Obj, _now: datetime) -> int:
            return len(o.get("data") or {}) + len(o.get("binaryData") or {})
        return [Column("Data", data, description="Data contains the configuration data."), AGE]
