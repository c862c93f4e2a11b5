"""Secret strategy: a ConfigMap's rules for base64 data, plus a type that never changes.

``stringData`` is a write-only convenience: defaulting encodes it into ``data`` (its keys win)
and drops it, as Kubernetes' conversion does on every write.
"""

from __future__ import annotations

import base64

from ..errors import Cause
from ..strategy import Column, Obj, Strategy
from ..table import AGE
from ..validation import validate_immutable
from ._common import set_default
from .configmaps import encoded_sizes, size_limit, validate_immutable_data, validate_keys


class SecretStrategy(Strategy):
    def default(self, obj: Obj) -> None:
        set_default(obj, "type", "Opaque")
        plain = obj.pop("stringData", None) or {}
        if plain:
            data = obj.get("data") or {}
            data.update({k: base64.b64encode(v.encode()).decode() for k, v in plain.items()})
            obj["data"] = data

    def validate(self, obj: Obj) -> list[Cause]:
        data = obj.get("data") or {}
        size, causes = encoded_sizes(data, "data")
        return validate_keys(data, "data", {}, "") + causes + size_limit(size, "data")

    def validate_update(self, new: Obj, old: Obj) -> list[Cause]:
        return (self.validate(new) + validate_immutable(new.get("type"), old.get("type"), "type")
                + validate_immutable_data(new, old, ("data",)))

    def columns(self) -> list[Column]:
        return [
            Column("Type", lambda o, _now: o.get("type") or "",
                   description="Used to facilitate programmatic handling of secret data."),
            Column("Data", lambda o, _now: len(o.get("data") or {}),
                   description="Data contains the secret data."),
            AGE,
        ]

    def field_labels(self, obj: Obj) -> dict[str, str]:
        return {"type": obj.get("type") or ""}
