"""Lease strategy (coordination.k8s.io/v1): node heartbeats and leader election.

Durations must be positive and transition counts non-negative; HOLDER shows who holds it.
"""

from __future__ import annotations

from ..errors import Cause, invalid_value
from ..strategy import Column, Obj, Strategy
from ..table import AGE
from ..validation import validate_nonnegative


class LeaseStrategy(Strategy):
    def validate(self, obj: Obj) -> list[Cause]:
        spec = obj.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        causes = [] if duration is None or duration > 0 else [
            invalid_value("spec.leaseDurationSeconds", duration, "must be greater than 0")]
        return causes + validate_nonnegative(spec.get("leaseTransitions"),
                                             "spec.leaseTransitions")

    def columns(self) -> list[Column]:
        return [Column("Holder", lambda o, _now: (o.get("spec") or {}).get("holderIdentity")
                       or "", description="holderIdentity contains the identity of the holder "
                       "of a current lease."), AGE]
