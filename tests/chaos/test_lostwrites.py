"""The lost-write check as a table: a history, the values read after healing, and the
acknowledged writes that must be reported lost (by their position in the history)."""

from __future__ import annotations

import pytest
from chaos_histories import cas, failed, read, write

from chaos.history import Operation, Value
from chaos.lostwrites import find_lost_writes

CASES: dict[str, tuple[list[Operation], dict[str, Value], list[int]]] = {
    "the last write survives": ([write(1, 0, 1), write(2, 2, 3)], {"k": 2}, []),
    "the last write is gone": ([write(1, 0, 1), write(2, 2, 3), read(1, 4, 5)], {"k": 1}, [1]),
    "the key is gone": ([write(1, 0, 1), write(2, 2, 3)], {"k": None}, [0, 1]),
    "a later delete explains an absent key": (
        [write(1, 0, 1), write(None, 2, 3)], {"k": None}, []),
    "a concurrent write may have come after": (
        [write(1, 0, 10, client=0), write(2, 1, 2, client=1)], {"k": 1}, []),
    "a concurrent write may have come before": (
        [write(1, 0, 10, client=0), write(2, 1, 2, client=1)], {"k": 2}, []),
    "a touching write counts as concurrent": ([write(1, 0, 1), write(2, 1, 2)], {"k": 1}, []),
    "an unknown write may land late": ([write(1, 0, None), write(2, 2, 3)], {"k": 1}, []),
    "an unknown write of the final value may have overwritten them all": (
        [write(1, 0, 1), write(2, 2, 3), write(3, 4, None)], {"k": 3}, []),
    "an unknown write of another value explains nothing": (
        [write(1, 0, 1), write(2, 2, 3), write(3, 4, None)], {"k": 1}, [1]),
    "a failed write explains nothing": ([write(1, 0, 1), failed(write(2, 2, 3))], {"k": 2}, [0]),
    "a failed write is not acknowledged": ([failed(write(1, 0, 1))], {"k": None}, []),
    "a successful cas is an acknowledged write": (
        [write(1, 0, 1), cas(1, 2, True, 2, 3)], {"k": 1}, [1]),
    "a cas that did not swap wrote nothing": (
        [write(1, 0, 1), cas(5, 6, False, 2, 3)], {"k": 1}, []),
    "an unknown cas may have written the final value": (
        [write(1, 0, 1), write(2, 2, 3), cas(1, 3, False, 0.5, None)], {"k": 3}, []),
    "a key without a final value is not checked": ([write(1, 0, 1)], {}, []),
    "the same value written twice": ([write(1, 0, 1), write(2, 2, 3), write(1, 4, 5)],
                                     {"k": 1}, []),
}


@pytest.mark.parametrize("name", CASES)
def test_lost_writes(name: str) -> None:
    history, final, lost = CASES[name]
    assert find_lost_writes(history, final) == [history[i] for i in lost]


def test_keys_are_judged_by_their_own_final_value() -> None:
    a1, a2 = write(1, 0, 1, key="a"), write(2, 2, 3, key="a")
    b1 = write(2, 0, 1, key="b")
    assert find_lost_writes([a1, b1, a2], {"a": 2, "b": 2}) == []
    assert find_lost_writes([a1, b1, a2], {"a": 1, "b": 2}) == [a2]
