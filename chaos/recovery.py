"""How fast the cluster took writes again after each fault, and what the clients saw during it.

The measure (faults.md: "time to first acknowledged write after the fault"): for a fault that
started at ``start``, the acknowledged writes (a write with outcome ok, or a cas that swapped)
*invoked* at or after ``start``; the earliest return among them, minus ``start``. A write invoked
before the fault and answered after it does not count: it says nothing about whether a client
arriving during the fault is served. The same is measured from the heal (``end``) when the fault
has one, which separates "the cluster routed around the fault" from "the cluster came back once it
was healed". A fault after which no write was acknowledged has no time: it is counted as missing,
never as 0, so that a cluster that never recovered cannot look fast.

Flow: ``measure_recovery`` sorts the acknowledged writes by invocation once and keeps, for every
position, the earliest return from there on, so each fault costs a binary search; it counts the
failed and unknown operations invoked during each fault the same way, and folds the per-fault
times into nearest-rank percentiles (``percentiles``, also used for operation latency).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.history import Kind, Operation, Outcome
from chaos.timeline import FaultEvent


@dataclass(frozen=True)
class Percentiles:
    """Nearest-rank percentiles of ``count`` samples; all None when there were none, so that an
    absent measurement is never read as a zero one. ``missing``: the cases that yielded no sample
    (a fault with no acknowledged write after it), reported beside the percentiles."""

    count: int
    p50: float | None
    p99: float | None
    max: float | None
    missing: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "p50": self.p50, "p99": self.p99, "max": self.max,
                "missing": self.missing}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Percentiles:
        return cls(count=int(obj["count"]), p50=obj["p50"], p99=obj["p99"], max=obj["max"],
                   missing=int(obj.get("missing", 0)))


def nearest_rank(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of ascending, non-empty ``ordered``: the smallest sample with
    at least ``percent`` % of the samples at or below it (a sample that occurred, never an
    interpolation between two)."""
    rank = max(1, math.ceil(percent / 100.0 * len(ordered)))
    return ordered[rank - 1]


def percentiles(samples: Iterable[float], missing: int = 0) -> Percentiles:
    ordered = sorted(samples)
    if not ordered:
        return Percentiles(0, None, None, None, missing)
    return Percentiles(len(ordered), nearest_rank(ordered, 50), nearest_rank(ordered, 99),
                       ordered[-1], missing)


@dataclass(frozen=True)
class FaultRecovery:
    """One fault's recovery: seconds from its start (and from its heal) to the first acknowledged
    write invoked at or after it, None when there was none; and the operations invoked while it
    lasted (until the end of the history when it was never healed) that failed or stayed
    unknown."""

    kind: str
    targets: tuple[str, ...]
    start: float
    end: float | None
    after_start: float | None
    after_heal: float | None
    failed: int
    unknown: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "targets": list(self.targets), "start": self.start,
                "end": self.end, "after_start": self.after_start, "after_heal": self.after_heal,
                "failed": self.failed, "unknown": self.unknown}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FaultRecovery:
        return cls(kind=str(obj["kind"]), targets=tuple(obj["targets"]), start=obj["start"],
                   end=obj["end"], after_start=obj["after_start"], after_heal=obj["after_heal"],
                   failed=int(obj["failed"]), unknown=int(obj["unknown"]))


@dataclass(frozen=True)
class Recovery:
    """Every fault's recovery, in the order of the fault timeline, and the percentiles over the
    faults from their starts and from their heals (a fault never healed is not missing from the
    latter: it had no heal to measure from)."""

    faults: tuple[FaultRecovery, ...]
    after_start: Percentiles
    after_heal: Percentiles

    def to_json(self) -> dict[str, Any]:
        return {"faults": [fault.to_json() for fault in self.faults],
                "after_start": self.after_start.to_json(),
                "after_heal": self.after_heal.to_json()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Recovery:
        return cls(faults=tuple(FaultRecovery.from_json(f) for f in obj["faults"]),
                   after_start=Percentiles.from_json(obj["after_start"]),
                   after_heal=Percentiles.from_json(obj["after_heal"]))


def is_acknowledged_write(op: Operation) -> bool:
    """The server said the value was stored: an ok write, or a cas that swapped (a cas that did
    not swap is an answer, but wrote nothing)."""
    if op.outcome is not Outcome.OK:
        return False
    return op.kind is Kind.WRITE or (op.kind is Kind.CAS and op.output is True)


class _FirstAcknowledged:
    """The earliest return of an acknowledged write invoked at or after a given time, answered by
    one binary search: writes sorted by invocation, with the minimum return of every suffix."""

    def __init__(self, history: Iterable[Operation]) -> None:
        writes = sorted((op.invoked, op.returned) for op in history if is_acknowledged_write(op))
        self._invoked = [invoked for invoked, _ in writes]
        self._earliest_from = [math.inf] * (len(writes) + 1)
        for i in range(len(writes) - 1, -1, -1):
            self._earliest_from[i] = min(writes[i][1], self._earliest_from[i + 1])

    def seconds_after(self, t: float) -> float | None:
        returned = self._earliest_from[bisect.bisect_left(self._invoked, t)]
        return None if math.isinf(returned) else returned - t


def _count_invoked(ordered: Sequence[float], start: float, end: float) -> int:
    return bisect.bisect_left(ordered, end) - bisect.bisect_left(ordered, start)


def measure_recovery(history: Sequence[Operation], faults: Sequence[FaultEvent]) -> Recovery:
    """Each fault's recovery and the percentiles over the faults (see the module's docstring)."""
    first = _FirstAcknowledged(history)
    failed = sorted(op.invoked for op in history if op.outcome is Outcome.FAIL)
    unknown = sorted(op.invoked for op in history if op.outcome is Outcome.UNKNOWN)
    per_fault = []
    for fault in faults:
        until = math.inf if fault.end is None else fault.end
        per_fault.append(FaultRecovery(
            kind=fault.kind, targets=tuple(fault.targets), start=fault.start, end=fault.end,
            after_start=first.seconds_after(fault.start),
            after_heal=None if fault.end is None else first.seconds_after(fault.end),
            failed=_count_invoked(failed, fault.start, until),
            unknown=_count_invoked(unknown, fault.start, until),
        ))
    from_start = [f.after_start for f in per_fault if f.after_start is not None]
    healed = [f for f in per_fault if f.end is not None]
    from_heal = [f.after_heal for f in healed if f.after_heal is not None]
    return Recovery(
        faults=tuple(per_fault),
        after_start=percentiles(from_start, missing=len(per_fault) - len(from_start)),
        after_heal=percentiles(from_heal, missing=len(healed) - len(from_heal)),
    )
