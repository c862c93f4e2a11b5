"""Server-side printing: the ``meta.k8s.io/v1`` Table that ``kubectl get`` shows.

Flow: ``Column`` (a column definition plus how to fill its cell), the time helpers that render
ages as Kubernetes' ``duration.HumanDuration`` does, the NAME and AGE columns every printer
shares, ``default_columns`` for kinds without a printer, then ``to_table``. As in Kubernetes'
table convertor, the server fills every column; kubectl hides priority-1 columns unless asked
for ``-o wide``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

NONE = "<none>"
UNKNOWN = "<unknown>"
INCLUDE_OBJECT = ("None", "Metadata", "Object")

NAME_DOC = ("Name must be unique within a namespace. Is required when creating resources, "
            "although some resources may allow a client to request the generation of an "
            "appropriate name automatically. Name is primarily intended for creation idempotence "
            "and configuration definition. Cannot be updated. More info: "
            "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names")
CREATED_DOC = ("CreationTimestamp is a timestamp representing the server time when this object "
               "was created. It is not guaranteed to be set in happens-before order across "
               "separate operations. Clients may not set this value. It is represented in "
               "RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for "
               "lists. More info: https://git.k8s.io/community/contributors/devel/"
               "sig-architecture/api-conventions.md#metadata")


#: How a column fills its cell from an object and the time of the request.
Cell = Callable[[dict[str, Any], datetime], Any]


@dataclass(frozen=True)
class Column:
    """One column of ``kubectl get``: a Table ``columnDefinition`` plus how to fill its cell.

    ``cell(obj, now)`` gets the time of the request because ages are relative to it. ``type``
    is the OpenAPI type of the cell ("string", "integer", "date"); priority-1 columns show only
    with ``-o wide``; ``format="name"`` marks the column holding the object's name.
    """

    name: str
    cell: Cell
    type: str = "string"
    priority: int = 0
    format: str = ""
    description: str = ""

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (None when absent or unreadable)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def human_duration(d: timedelta) -> str:
    """Kubernetes' ``duration.HumanDuration``: precise when short, coarser as it grows."""
    seconds = int(d.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return _two_units(minutes, "m", seconds % 60, "s")
    if minutes < 3 * 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return _two_units(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return _two_units(days, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return _two_units(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _two_units(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}" if small == 0 else f"{big}{big_unit}{small}{small_unit}"


def since(timestamp: Any, now: datetime) -> str:
    """Time elapsed since ``timestamp`` ("<unknown>" when unset), as printers.go shows it."""
    then = parse_time(timestamp)
    if then is None:
        return UNKNOWN
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return human_duration(now - then)


def age(obj: dict[str, Any], now: datetime) -> str:
    """The AGE cell: time since ``metadata.creationTimestamp``."""
    return since((obj.get("metadata") or {}).get("creationTimestamp"), now)


def count(section: str, key: str) -> Cell:
    """A cell holding the number at ``obj[section][key]``, 0 when unset (replica counts)."""
    return lambda obj, _now: int((obj.get(section) or {}).get(key) or 0)


NAME = Column("Name", lambda o, _now: (o.get("metadata") or {}).get("name", ""),
              format="name", description=NAME_DOC)
AGE = Column("Age", age, description=CREATED_DOC)


def _created_at(obj: dict[str, Any], _now: datetime) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return "0001-01-01T00:00:00Z"
    return created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_columns() -> list[Column]:
    """Kubernetes' default table convertor for kinds without a printer: Name, Created At."""
    return [Column("Created At", _created_at, type="date", description=CREATED_DOC)]


def to_table(columns: list[Column], objects: list[dict[str, Any]], *,
             include_object: str = "Metadata", list_meta: dict[str, Any] | None = None,
             now: datetime) -> dict[str, Any]:
    """The Table of ``objects``: NAME first (unless a column already has format "name", as
    Events' does), then ``columns``; each row carries the object, its metadata or nothing."""
    if include_object not in INCLUDE_OBJECT:
        raise ValueError(f"includeObject must be one of {', '.join(INCLUDE_OBJECT)}")
    if not any(c.format == "name" for c in columns):
        columns = [NAME, *columns]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_meta or {}),
        "columnDefinitions": [c.definition() for c in columns],
        "rows": [{"cells": [c.cell(obj, now) for c in columns],
                  "object": _row_object(obj, include_object)} for obj in objects],
    }


def _row_object(obj: dict[str, Any], include_object: str) -> dict[str, Any] | None:
    if include_object == "Object":
        return obj
    if include_object == "Metadata":
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata") or {}}
    return None
