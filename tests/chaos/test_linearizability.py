"""Hand-made histories and their verdicts: sequential and overlapping ones pass in every order the
model allows; stale reads, lost writes and impossible cas are caught with a witness; unknown
operations may take effect late or never; an exhausted budget is "unknown", never a pass."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from chaos_histories import cas, failed, read, write

from chaos.history import Operation
from chaos.linearizability import Budget, Verdict, check_history, check_operations

OK, NOT = Verdict.LINEARIZABLE, Verdict.NOT_LINEARIZABLE

CASES = {
    "empty": ([], OK),
    "sequential": ([write(1, 0, 1), read(1, 2, 3), write(2, 4, 5), cas(2, 3, True, 6, 7),
                    read(3, 8, 9), cas(2, 4, False, 10, 11), read(3, 12, 13)], OK),
    "absent at first": ([read(None, 0, 1)], OK),
    "a value no one wrote": ([read(1, 0, 1)], NOT),
    "read during a write sees the new value": ([write(1, 0, 10), read(1, 1, 2)], OK),
    "read during a write sees the old value": ([write(1, 0, 10), read(None, 1, 2)], OK),
    "concurrent writes, then the first": (
        [write(1, 0, 10, client=0), write(2, 1, 9, client=1), read(1, 11, 12)], OK),
    "concurrent writes, then the second": (
        [write(1, 0, 10, client=0), write(2, 1, 9, client=1), read(2, 11, 12)], OK),
    "concurrent writes, then one and the other": (
        [write(1, 0, 10, client=0), write(2, 1, 9, client=1), read(1, 11, 12),
         read(2, 13, 14)], NOT),
    "reads during a write see it flip once": (
        [write(1, 0, 10), read(None, 1, 2, client=1), read(1, 3, 4, client=1),
         read(1, 5, 6, client=1)], OK),
    "reads during a write see it flip back": (
        [write(1, 0, 10), read(1, 1, 2, client=1), read(None, 3, 4, client=1)], NOT),
    "touching operations are concurrent": ([write(1, 0, 1), read(None, 1, 2)], OK),
    "stale read": ([write(1, 0, 1), write(2, 2, 3), read(1, 4, 5), read(2, 6, 7)], NOT),
    "lost write": ([write(1, 0, 1), write(2, 2, 3), read(1, 4, 5)], NOT),
    "cas on a value no one wrote": ([write(1, 0, 1), cas(5, 6, True, 2, 3)], NOT),
    "cas on a value already overwritten": (
        [write(1, 0, 1), write(2, 2, 3), cas(1, 3, True, 4, 5)], NOT),
    "cas that failed on a matching value": ([write(1, 0, 1), cas(1, 2, False, 2, 3)], NOT),
    "concurrent cas, one wins": (
        [write(1, 0, 1), cas(1, 2, True, 2, 5, client=0), cas(1, 3, False, 3, 4, client=1),
         read(2, 6, 7)], OK),
    "concurrent cas, both win": (
        [write(1, 0, 1), cas(1, 2, True, 2, 5, client=0), cas(1, 3, True, 3, 4, client=1)], NOT),
    "unknown write that took effect": ([write(1, 0, None), read(1, 5, 6)], OK),
    "unknown write that never took effect": (
        [write(1, 0, None), read(None, 5, 6), read(None, 7, 8)], OK),
    "unknown write that took effect late": (
        [write(1, 0, None), read(None, 5, 6), read(1, 7, 8)], OK),
    "unknown write that took effect, then was undone": (
        [write(1, 0, None), read(1, 5, 6), read(None, 7, 8)], NOT),
    "unknown write before its invocation": ([read(1, 0, 1), write(1, 2, None)], NOT),
    "unknown cas that never took effect": (
        [write(1, 0, 1), write(3, 2, 3), cas(1, 2, True, 4, None), read(3, 5, 6)], OK),
    "unknown cas that took effect": (
        [write(1, 0, 1), cas(1, 2, False, 2, None), read(2, 5, 6)], OK),
    "unknown write seen only by a mismatch": (
        [write(1, 0, 1), write(2, 2, None), cas(1, 3, False, 5, 6)], OK),
    "unknown write seen only by an unknown cas": (
        [write(1, 0, 1), write(2, 2, None), cas(2, 3, False, 3, None), read(3, 5, 6)], OK),
    "unknown read with any output": ([read(9, 0, None), write(1, 1, 2), read(1, 3, 4)], OK),
    "failed write never took effect": ([failed(write(1, 0, 1)), read(None, 2, 3)], OK),
    "failed write that took effect is a violation": ([failed(write(1, 0, 1)), read(1, 2, 3)], NOT),
}


@pytest.mark.parametrize("name", CASES)
def test_verdict(name: str) -> None:
    ops, verdict = CASES[name]
    assert check_operations(ops).verdict is verdict


@pytest.mark.parametrize("name", CASES)
def test_verdict_does_not_depend_on_the_recorded_order(name: str) -> None:
    ops, verdict = CASES[name]
    for order in itertools.islice(itertools.permutations(ops), 24):
        assert check_operations(order).verdict is verdict


def test_a_stale_read_names_the_prefix_and_the_read() -> None:
    w1, w2, r1 = write(1, 0, 1), write(2, 2, 3), read(1, 4, 5)
    result = check_operations([w1, w2, r1, read(2, 6, 7)])
    assert result.witness is not None
    assert result.witness.prefix == (w1, w2)
    assert result.witness.state == 2
    assert result.witness.stuck == r1
    assert result.to_json()["witness"]["stuck"] == r1.to_json()


def test_a_linearizable_key_has_no_witness() -> None:
    result = check_operations(CASES["sequential"][0])
    assert result.witness is None and result.operations == 7


def _keyed(key: str, ops: list[Operation]) -> list[Operation]:
    return [dataclasses.replace(op, key=key) for op in ops]


def test_keys_are_checked_apart_and_the_worst_verdict_wins() -> None:
    # Each key alone is linearizable; read as one register they would not be.
    a = _keyed("a", [write(1, 0, 1), read(1, 2, 3)])
    b = _keyed("b", [write(2, 0.5, 1.5), read(2, 2.5, 3.5)])
    assert check_history(a + b).verdict is OK
    stale = _keyed("c", CASES["stale read"][0])
    result = check_history(a + stale + b)
    assert result.verdict is NOT
    assert {key: r.verdict for key, r in result.keys.items()} == {"a": OK, "c": NOT, "b": OK}
    hard = _keyed("d", _hard_history())
    assert check_history(a + hard, budget=Budget(steps=50)).verdict is Verdict.UNKNOWN
    assert check_history(a + hard + stale, budget=Budget(steps=50)).verdict is NOT


def _hard_history(writers: int = 12) -> list[Operation]:
    """Many concurrent writes, then a read of a value none wrote: the search has to try every
    subset of writes before it can say no."""
    ops = [write(i, 0.1 * i, 100, client=i) for i in range(writers)]
    return [*ops, read(-1, 101, 102, client=0)]


def test_an_exhausted_step_budget_is_unknown_never_a_verdict() -> None:
    hard = _hard_history()
    assert check_operations(hard).verdict is NOT
    result = check_operations(hard, budget=Budget(steps=50))
    assert (result.verdict, result.exhausted, result.steps) == (Verdict.UNKNOWN, "steps", 50)
    easy = CASES["sequential"][0]
    assert check_operations(easy, budget=Budget(steps=3)).verdict is Verdict.UNKNOWN


def test_an_exhausted_time_budget_is_unknown() -> None:
    ticks = itertools.count()
    result = check_operations(_hard_history(), budget=Budget(seconds=0.5, clock=lambda: next(ticks)))
    assert (result.verdict, result.exhausted) == (Verdict.UNKNOWN, "time")


def test_result_json_names_every_key() -> None:
    stale = _keyed("c", CASES["stale read"][0])
    report = check_history(stale).to_json()
    assert report["verdict"] == "not linearizable"
    assert report["keys"]["c"]["witness"]["state"] == 2
