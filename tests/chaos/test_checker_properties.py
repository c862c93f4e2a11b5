"""Properties over generated histories: what a linearizable register service produces always
passes, with no lost write; one read changed to a value never written always fails; and on small
arbitrary histories (with repeated or unique written values, so ``Register.prepare`` is tried
too) the checker agrees with the definition, tried by brute force."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

from chaos_histories import NEVER_WRITTEN, simulate
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from chaos.history import Kind, Operation, Outcome, Value
from chaos.linearizability import Budget, Verdict, check_history, check_operations
from chaos.lostwrites import find_lost_writes
from chaos.model import Register

#: Generous for these sizes, so an "unknown" here is a failure, not a shrug.
BUDGET = Budget(steps=2_000_000, seconds=None)

simulations = st.builds(
    simulate,
    rng=st.randoms(use_true_random=False),
    clients=st.integers(1, 5),
    ops_per_client=st.integers(1, 8),
    keys=st.sampled_from([["a"], ["a", "b"], ["a", "b", "c"]]),
    p_unknown=st.sampled_from([0.0, 0.1, 0.25]),
)


@settings(max_examples=200, deadline=None)
@given(simulations)
def test_a_linearizable_service_passes_and_loses_nothing(
    simulation: tuple[list[Operation], dict[str, Value]],
) -> None:
    history, final = simulation
    assert check_history(history, budget=BUDGET).verdict is Verdict.LINEARIZABLE
    assert find_lost_writes(history, final) == []


@settings(max_examples=200, deadline=None)
@given(simulations, st.randoms(use_true_random=False))
def test_a_read_of_a_value_never_written_fails(
    simulation: tuple[list[Operation], dict[str, Value]], rng: random.Random,
) -> None:
    history, _ = simulation
    reads = [i for i, op in enumerate(history) if op.kind is Kind.READ and op.outcome is Outcome.OK]
    assume(reads)
    i = rng.choice(reads)
    mutated = [*history[:i], dataclasses.replace(history[i], output=NEVER_WRITTEN), *history[i + 1:]]
    result = check_history(mutated, budget=BUDGET)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.keys[history[i].key].verdict is Verdict.NOT_LINEARIZABLE


def _linearizable_by_definition(ops: list[Operation]) -> bool:
    """Some subset of the unknown operations and every ok one, in some order that keeps each
    operation after those that returned before its invocation, runs legally on the register."""
    ok = [op for op in ops if op.outcome is Outcome.OK]
    unknown = [op for op in ops if op.outcome is Outcome.UNKNOWN]
    model = Register()
    for size in range(len(unknown) + 1):
        for taken in itertools.combinations(unknown, size):
            for order in itertools.permutations([*ok, *taken]):
                if any(later.returned < earlier.invoked
                       for earlier, later in itertools.combinations(order, 2)):
                    continue
                state, legal = model.init(), True
                for op in order:
                    legal, state = model.step(state, op)
                    if not legal:
                        break
                if legal:
                    return True
    return False


@st.composite
def small_histories(draw: st.DrawFn, unique_writes: bool) -> list[Operation]:
    """Up to six operations with arbitrary outputs on one key; with ``unique_writes`` the i-th
    writes i + 1 (so ``Register.prepare`` settles unknown writes), else values repeat."""
    size = draw(st.integers(0, 6))
    values = st.sampled_from([None, *range(1, size + 1)] if unique_writes else [None, 1, 2])
    ops = []
    for i in range(size):
        kind = draw(st.sampled_from(list(Kind)))
        outcome = draw(st.sampled_from([Outcome.OK, Outcome.OK, Outcome.UNKNOWN, Outcome.FAIL]))
        invoked = draw(st.integers(0, 8))
        returned = math.inf if outcome is Outcome.UNKNOWN else invoked + draw(st.integers(0, 4))
        new = i + 1 if unique_writes else draw(values)
        value_in = {Kind.READ: None, Kind.WRITE: new, Kind.CAS: (draw(values), new)}[kind]
        out = {Kind.READ: draw(values), Kind.WRITE: None, Kind.CAS: draw(st.booleans())}[kind]
        ops.append(Operation(draw(st.integers(0, 3)), "k", kind, value_in,
                             out if outcome is Outcome.OK else None, outcome, float(invoked),
                             returned))
    return ops


@settings(max_examples=500, deadline=None)
@given(st.booleans().flatmap(small_histories))
def test_agrees_with_the_definition_on_small_histories(ops: list[Operation]) -> None:
    verdict = check_operations(ops, budget=BUDGET).verdict
    expected = _linearizable_by_definition(ops)
    assert verdict is (Verdict.LINEARIZABLE if expected else Verdict.NOT_LINEARIZABLE)
    if expected:  # the weaker check passes whatever the exact one passes
        weaker = check_operations(ops, Register(check_mismatches=False), BUDGET)
        assert weaker.verdict is Verdict.LINEARIZABLE
