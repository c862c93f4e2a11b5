"""Event strategy (core/v1 Events, as ``kubectl get events`` lists them).

Validation is light: an event names the object it is about, in its own namespace. The
printer puts NAME last (a wide column), as Kubernetes' does.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ..errors import Cause, invalid_value, required
from ..strategy import Column, Obj, Strategy
from ..table import NAME, Cell, since

DEFAULT_NAMESPACE = "default"


class EventStrategy(Strategy):
    def validate(self, obj: Obj) -> list[Cause]:
        involved = obj.get("involvedObject")
        if involved is None:
            return [required("involvedObject")]
        namespace = (obj.get("metadata") or {}).get("namespace") or ""
        theirs = involved.get("namespace") or ""
        if theirs != namespace and (theirs or namespace != DEFAULT_NAMESPACE):
            return [invalid_value("involvedObject.namespace", theirs,
                                  "does not match event.namespace")]
        return []

    def field_labels(self, obj: Obj) -> dict[str, str]:
        involved = obj.get("involvedObject") or {}
        fields = {f"involvedObject.{key}": involved.get(key) or ""
                  for key in ("kind", "namespace", "name", "uid", "apiVersion",
                              "resourceVersion", "fieldPath")}
        source = (obj.get("source") or {}).get("component") or obj.get("reportingComponent")
        return {**fields, "reason": obj.get("reason") or "", "type": obj.get("type") or "",
                "source": source or "", "reportingComponent": obj.get("reportingComponent") or ""}

    def columns(self) -> list[Column]:
        def text(key: str) -> Cell:
            return lambda o, _now: (o.get(key) or "").strip()
        return [
            Column("Last Seen", _last_seen, description="The time at which the most recent "
                   "occurrence of this event was recorded."),
            Column("Type", text("type"), description="Type of this event (Normal, Warning)."),
            Column("Reason", text("reason"), description="This should be a short, machine "
                   "understandable string that gives the reason for the transition into the "
                   "object's current status."),
            Column("Object", _target, description="The object that this event is about."),
            Column("Subobject", lambda o, _now: (o.get("involvedObject") or {})
                   .get("fieldPath") or "", priority=1,
                   description="The part of the object this event is about."),
            Column("Source", _source, priority=1,
                   description="The component reporting this event."),
            Column("Message", text("message"), description="A human-readable description of "
                   "the status of this operation."),
            Column("First Seen", _first_seen, priority=1, description="The time at which the "
                   "event was first recorded."),
            Column("Count", _count, priority=1,
                   description="The number of times this event has occurred."),
            replace(NAME, priority=1),
        ]


def _first_seen(event: Obj, now: datetime) -> str:
    return since(event.get("firstTimestamp") or event.get("eventTime"), now)


def _last_seen(event: Obj, now: datetime) -> str:
    series = event.get("series") or {}
    if series.get("lastObservedTime"):
        return since(series["lastObservedTime"], now)
    if event.get("lastTimestamp"):
        return since(event["lastTimestamp"], now)
    return _first_seen(event, now)


def _count(event: Obj, _now: datetime) -> int:
    return int((event.get("series") or {}).get("count") or event.get("count") or 1)


def _target(event: Obj, _now: datetime) -> str:
    involved = event.get("involvedObject") or {}
    kind = (involved.get("kind") or "").lower()
    return f"{kind}/{involved['name']}" if involved.get("name") else kind


def _source(event: Obj, _now: datetime) -> str:
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {host}" if host else component
