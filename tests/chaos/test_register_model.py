"""The register as tables: its step function (state and operation in, accepted and state out) and
its ``prepare`` (a key's operations in, the ones to search out)."""

from __future__ import annotations

import dataclasses

import pytest
from chaos_histories import cas, read, write

from chaos.history import Kind, Operation, Outcome, Value
from chaos.model import Register

CASES = [
    # state, operation, accepted, state after (when accepted)
    (None, read(None, 0, 1), True, None),
    (None, read(1, 0, 1), False, None),
    (1, read(1, 0, 1), True, 1),
    (1, read("1", 0, 1), False, 1),
    (1, read(2, 0, None), True, 1),               # an unknown read accepts anything
    (1, write(2, 0, 1), True, 2),
    (1, write(2, 0, None), True, 2),
    (1, cas(1, 2, True, 0, 1), True, 2),
    (1, cas(1, 2, False, 0, 1), False, 2),
    (3, cas(1, 2, False, 0, 1), True, 3),
    (3, cas(1, 2, True, 0, 1), False, 3),
    (None, cas(None, 2, True, 0, 1), True, 2),    # create if absent
    (1, cas(1, 2, True, 0, None), True, 2),       # an unknown cas applies iff it matches
    (3, cas(1, 2, True, 0, None), True, 3),
]


@pytest.mark.parametrize("state, op, accepted, after", CASES)
def test_register_step(state: Value, op: Operation, accepted: bool, after: Value) -> None:
    ok, new_state = Register().step(state, op)
    assert ok is accepted
    if accepted:
        assert new_state == after


def test_a_register_starts_absent() -> None:
    assert Register().init() is None


def _settled(op: Operation, returned: float) -> Operation:
    output = True if op.kind is Kind.CAS else None
    return dataclasses.replace(op, outcome=Outcome.OK, output=output, returned=returned)


W1, W2 = write(1, 0, None), write(2, 1, 2)
C3 = cas(2, 3, False, 3, None)
PREPARE = {
    "an unknown read is dropped": ([read(1, 0, None), W2], [W2]),
    "an observed unknown write returns by its first observer": (
        [W1, read(1, 5, 6), read(1, 3, 4)], [_settled(W1, 4), read(1, 5, 6), read(1, 3, 4)]),
    "a cas that expected it observes it too": (
        [W1, cas(1, 5, True, 3, 4)], [_settled(W1, 4), cas(1, 5, True, 3, 4)]),
    "an observed unknown cas succeeded": ([W2, C3, read(3, 5, 6)],
                                          [W2, _settled(C3, 6), read(3, 5, 6)]),
    "an observer before the invocation bounds it at its invocation": (
        [read(1, 0, 0.5), write(1, 2, None)], [read(1, 0, 0.5), _settled(write(1, 2, None), 2)]),
    "an unmentioned unknown write is dropped": ([W1, W2, read(2, 3, 4)], [W2, read(2, 3, 4)]),
    "an unknown cas's expected value is a mention": ([W1, cas(1, 3, True, 2, None)], [W1]),
    "repeated values settle nothing": ([W1, write(1, 1, 2), read(1, 3, 4), write(5, 3, None)],
                                       [W1, write(1, 1, 2), read(1, 3, 4), write(5, 3, None)]),
    "a written None settles nothing": ([W1, write(None, 1, 2)], [W1, write(None, 1, 2)]),
    "a mismatch keeps unmentioned unknown writes": ([W1, W2, cas(7, 8, False, 3, 4)],
                                                    [W1, W2, cas(7, 8, False, 3, 4)]),
}


@pytest.mark.parametrize("name", PREPARE)
def test_prepare(name: str) -> None:
    ops, prepared = PREPARE[name]
    assert Register().prepare(ops) == prepared


def test_without_mismatches_unmentioned_unknown_writes_drop() -> None:
    ops = [W1, W2, cas(7, 8, False, 3, 4)]
    assert Register(check_mismatches=False).prepare(ops) == [W2]
