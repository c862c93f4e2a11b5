"""The fault timeline of a chaos run: what was done to which hosts, and when, on the clock the
workload's operations use (``time.monotonic``), so reports can lay faults and operations on one
axis and measure recovery from each fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultEvent:
    """One fault: injected at ``start``, healed at ``end`` (None while it lasts, or when the
    run ended first and the final heal removed it: then ``end`` is the heal's time).

    ``kind``: what was done (``kill``, ``pause``, ``partition``, ``partition-one-way``, ...);
    ``targets``: the hosts it hit (lab host names, e.g. ``lab-c1``); ``detail``: one line for
    people (which side of a partition, which signal, the leader at the time)."""

    kind: str
    targets: list[str]
    start: float
    end: float | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "targets": list(self.targets), "start": self.start,
                "end": self.end, "detail": self.detail, "extra": dict(self.extra)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FaultEvent:
        return cls(kind=str(obj["kind"]), targets=[str(t) for t in obj["targets"]],
                   start=float(obj["start"]),
                   end=None if obj.get("end") is None else float(obj["end"]),
                   detail=str(obj.get("detail", "")), extra=dict(obj.get("extra") or {}))
