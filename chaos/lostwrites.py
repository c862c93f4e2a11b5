"""Acknowledged writes that the state read after healing contradicts.

The rule, per key, given its ``final`` value (read once every client has stopped and the cluster
has healed): an acknowledged write ``w`` (a write with outcome ok, or a cas that returned
success) of a value other than the final one is lost iff every operation that may have written
the final value (a write or cas of it whose outcome is ok or unknown; a cas that returned
failure wrote nothing) returned before ``w`` was invoked. So a key found absent (None) loses
every acknowledged write that no possible delete (a write of None) could have followed.

Why it flags only real losses: had ``w`` survived, the final value would come from the last
effective write of a linearization, which is placed after ``w`` and so cannot have returned
before ``w`` was invoked. It needs no unique values, but unique values per key (the workload's
habit) make it sharper: then "may have written the final value" names one operation. A lost
write that some operation of the final value could have followed is not flagged here; reads
after it let the linearizability checker catch it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import cast

from chaos.history import Kind, Operation, Outcome, Value, split_by_key


def find_lost_writes(history: Iterable[Operation], final: Mapping[str, Value]) -> list[Operation]:
    """The lost acknowledged writes, per key in recorded order. A key missing from ``final`` (its
    last read failed) is not checked; a key found absent is there with None."""
    lost: list[Operation] = []
    for key, ops in split_by_key(history).items():
        if key not in final:
            continue
        writes = list(_writes(ops))
        last_writer_of_final = max(
            (op.returned for op, value in writes if value == final[key]), default=-math.inf
        )
        lost.extend(
            op
            for op, value in writes
            if op.outcome is Outcome.OK and value != final[key] and last_writer_of_final < op.invoked
        )
    return lost


def _writes(ops: Iterable[Operation]) -> Iterator[tuple[Operation, Value]]:
    """The operations that may have written, with the value each wrote."""
    for op in ops:
        if op.outcome is Outcome.FAIL or op.kind is Kind.READ:
            continue
        if op.kind is Kind.WRITE:
            yield op, cast(Value, op.input)
        elif op.outcome is Outcome.UNKNOWN or op.output is True:
            yield op, cast(tuple[Value, Value], op.input)[1]
