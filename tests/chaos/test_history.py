"""The operation record: its JSON form survives a round trip (+infinity as null), it refuses
records the checkers would misread, and a history splits per key in recorded order."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from chaos_histories import cas, failed, read, write

from chaos.history import (
    Kind,
    Operation,
    Outcome,
    history_from_json,
    history_to_json,
    split_by_key,
)


def test_json_round_trip_keeps_every_field() -> None:
    history = [write("v1", 0.5, 1.0, client=3, key="a"), cas("v1", "v2", True, 1.5, 2.0),
               cas(None, 7, False, 2.0, None), failed(read(None, 2.5, 3.0)), read(7, 3.0, 3.5)]
    history[1] = dataclasses.replace(history[1], server="https://198.18.0.12:6443")
    text = json.dumps(history_to_json(history), allow_nan=False)
    assert history_from_json(json.loads(text)) == history


def test_an_unknown_return_is_null_in_json() -> None:
    obj = write(1, 0.0, None).to_json()
    assert obj["returned"] is None and obj["outcome"] == "unknown"
    assert math.isinf(Operation.from_json(obj).returned)


@pytest.mark.parametrize("outcome, returned", [
    (Outcome.UNKNOWN, 2.0),       # an unknown outcome must not bound its effect in time
    (Outcome.OK, math.inf),       # an answered operation returned at a time
    (Outcome.OK, 0.5),            # before its invocation
])
def test_inconsistent_times_are_refused(outcome: Outcome, returned: float) -> None:
    with pytest.raises(ValueError):
        Operation(0, "k", Kind.WRITE, 1, None, outcome, 1.0, returned)


def test_a_cas_needs_expected_and_new() -> None:
    with pytest.raises(ValueError):
        Operation(0, "k", Kind.CAS, 1, True, Outcome.OK, 0.0, 1.0)


def test_split_by_key_keeps_the_recorded_order() -> None:
    a1, b1, a2 = write(1, 0, 1, key="a"), write(2, 0, 1, key="b"), read(1, 2, 3, key="a")
    assert split_by_key([a1, b1, a2]) == {"a": [a1, a2], "b": [b1]}
