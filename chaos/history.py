"""The operation record of the chaos workload, its JSON form for reports, and the split per key.

A client records one ``Operation`` per request: what it asked (kind, input), what it got (output,
outcome) and when (monotonic invoke and return times, on one clock for all clients). The outcome
says what the checkers may assume:

- ``ok``: the server answered and the operation took effect. A cas whose comparison failed
  (409 Conflict) is ``ok`` with output False where the workload's values are unique per key (it
  observed that the value differed), else ``fail``; ``Register(check_mismatches=False)`` says
  what checking such mismatches costs;
- ``fail``: a definite failure that applied nothing (a 4xx that says so): the checkers drop it;
- ``unknown``: a timeout, a 503 or a lost connection: it may have taken effect at any time after
  its invocation, or never, so it returns at +infinity (as in Knossos and porcupine) and its
  output means nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: A register's value: a ConfigMap's data value, None when the key is absent.
Value = str | int | None


class Kind(StrEnum):
    READ = "read"
    WRITE = "write"
    CAS = "cas"


class Outcome(StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Operation:
    """One request of one client on one key.

    ``input``: None for a read, the value for a write, ``(expected, new)`` for a cas.
    ``output``: the value read, a cas's success, None for a write or an unknown outcome.
    ``server``: the controller the request went to ("" when not recorded), so a witness
    names who answered it.
    """

    client: int
    key: str
    kind: Kind
    input: Value | tuple[Value, Value]
    output: Value | bool
    outcome: Outcome
    invoked: float
    returned: float
    server: str = ""

    def __post_init__(self) -> None:
        if (self.outcome is Outcome.UNKNOWN) != math.isinf(self.returned):
            raise ValueError(f"{self}: an operation returns at +infinity iff its outcome is unknown")
        if self.returned < self.invoked:
            raise ValueError(f"{self}: returned before it was invoked")
        if self.kind is Kind.CAS and not (isinstance(self.input, tuple) and len(self.input) == 2):
            raise ValueError(f"{self}: a cas's input is (expected, new)")

    def to_json(self) -> dict[str, Any]:
        """A JSON object; +infinity (not JSON) is written as a null return time."""
        return {
            "client": self.client,
            "key": self.key,
            "kind": self.kind.value,
            "input": list(self.input) if isinstance(self.input, tuple) else self.input,
            "output": self.output,
            "outcome": self.outcome.value,
            "invoked": self.invoked,
            "returned": None if math.isinf(self.returned) else self.returned,
            "server": self.server,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Operation:
        kind = Kind(obj["kind"])
        raw_input = obj["input"]
        returned = obj["returned"]
        return cls(
            client=obj["client"],
            key=obj["key"],
            kind=kind,
            input=(raw_input[0], raw_input[1]) if kind is Kind.CAS else raw_input,
            output=obj["output"],
            outcome=Outcome(obj["outcome"]),
            invoked=obj["invoked"],
            returned=math.inf if returned is None else returned,
            server=obj.get("server", ""),
        )


def history_to_json(history: Iterable[Operation]) -> list[dict[str, Any]]:
    return [op.to_json() for op in history]


def history_from_json(objs: Iterable[dict[str, Any]]) -> list[Operation]:
    return [Operation.from_json(obj) for obj in objs]


def split_by_key(history: Iterable[Operation]) -> dict[str, list[Operation]]:
    """Each key's operations in their recorded order: a register's history is checked alone
    (P-compositionality: a history is linearizable iff each key's is)."""
    per_key: dict[str, list[Operation]] = {}
    for op in history:
        per_key.setdefault(op.key, []).append(op)
    return per_key
