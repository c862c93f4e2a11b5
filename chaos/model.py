"""Sequential specifications for the linearizability checker: a ``Model`` is a pure step function
over hashable states (the checker memoises on them) and a ``prepare`` that trims what the search
need not try; ``Register`` is the one for a key.

An operation with an unknown outcome carries no output to check: the model only applies its
effect, so the checker may place it anywhere after its invocation (or last, which is "never").
Each such operation stays concurrent with everything after it and doubles the states the search
may visit, so ``Register.prepare`` settles the ones the rest of the history decides, as etcd's
robustness tests patch their history before porcupine (see its docstring).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import Protocol, TypeVar, cast

from chaos.history import Kind, Operation, Outcome, Value

S = TypeVar("S", bound=Hashable)


class Model(Protocol[S]):
    def init(self) -> S:
        """The state before any operation."""
        ...

    def step(self, state: S, op: Operation) -> tuple[bool, S]:
        """Whether ``op``, applied atomically in ``state``, could have returned what it returned;
        and the state after it (meaningless when it could not)."""
        ...

    def prepare(self, ops: Sequence[Operation]) -> list[Operation]:
        """One key's operations (none failed) to search instead: linearizable iff they are.
        Returning them unchanged is always correct."""
        ...


class Register:
    """A single value, None while absent: read returns it, write sets it, cas(expected, new)
    sets it to new iff it equals expected and says whether it did.

    ``check_mismatches=False`` drops each answered cas that reported a mismatch before the search:
    a weaker check (a mismatch it would have refuted passes) that lets ``prepare`` drop the
    unknown writes nothing observed, which can turn an exhausted budget into a verdict.
    """

    def __init__(self, *, check_mismatches: bool = True) -> None:
        self.check_mismatches = check_mismatches

    def init(self) -> Value:
        return None

    def step(self, state: Value, op: Operation) -> tuple[bool, Value]:
        unknown = op.outcome is Outcome.UNKNOWN
        if op.kind is Kind.READ:
            return unknown or op.output == state, state
        if op.kind is Kind.WRITE:
            return True, cast(Value, op.input)
        expected, new = cast(tuple[Value, Value], op.input)
        matched = state == expected
        after = new if matched else state
        return unknown or op.output is matched, after

    def prepare(self, ops: Sequence[Operation]) -> list[Operation]:
        """Drops reads of unknown outcome (they change and show nothing). Then, where every
        written value is unique and not None, settles each unknown write or cas by its value:

        - one that an answered read or successful cas observed took effect (no other operation
          wrote that value) before the earliest such observer returned: it becomes ok (a cas
          with success) returning then;
        - one whose value nothing mentions (as a read's output or a cas's expected value) is
          dropped, unless an answered cas reported a mismatch: no answered read or successful
          cas could have run while that value stood (it would mention it), so removing it
          from a linearization leaves one; a mismatch, though, may have needed it to stand.
        """
        ops = [op for op in ops if not (op.outcome is Outcome.UNKNOWN and op.kind is Kind.READ)
               and (self.check_mismatches or not _is_mismatch(op))]
        written = [_new_value(op) for op in ops if op.kind is not Kind.READ]
        if None in written or len(set(written)) < len(written):
            return ops
        may_drop = not any(_is_mismatch(op) for op in ops)
        mentioned: set[Value] = set()
        observed_by: dict[Value, float] = {}
        for op in ops:
            if op.kind is Kind.READ:
                seen = op.output
            elif op.kind is Kind.CAS:
                seen = cast(tuple[Value, Value], op.input)[0]
            else:
                continue
            mentioned.add(seen)
            if op.outcome is Outcome.OK and op.output is not False:
                observed_by[seen] = min(observed_by.get(seen, math.inf), op.returned)
        prepared = []
        for op in ops:
            if op.outcome is Outcome.UNKNOWN:
                value = _new_value(op)
                if value in observed_by:
                    op = dataclasses.replace(
                        op, outcome=Outcome.OK, output=True if op.kind is Kind.CAS else None,
                        returned=max(op.invoked, observed_by[value]))
                elif may_drop and value not in mentioned:
                    continue
            prepared.append(op)
        return prepared


def _new_value(op: Operation) -> Value:
    """The value a write or a successful cas leaves."""
    if op.kind is Kind.CAS:
        return cast(tuple[Value, Value], op.input)[1]
    return cast(Value, op.input)


def _is_mismatch(op: Operation) -> bool:
    """An answered cas that found another value: it changed nothing, only observed."""
    return op.kind is Kind.CAS and op.outcome is Outcome.OK and op.output is False
