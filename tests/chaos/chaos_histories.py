"""Histories for the checkers' tests: short builders for hand-made operations, and a simulated
linearizable register service whose histories are correct by construction.

Builders: ``t1=None`` is an unknown outcome (the return at +infinity); ``failed`` marks a definite
failure. The simulation draws each operation's invocation, duration and a linearization point
between its invocation and return, then applies the operations atomically in the order of their
points: reads and cas see the state at that instant, unknown operations take effect there or
never, failed ones never.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from chaos.history import Kind, Operation, Outcome, Value

NEVER_WRITTEN = "never-written"


def _op(kind: Kind, input: Value | tuple[Value, Value], output: Value | bool, t0: float,
        t1: float | None, client: int, key: str) -> Operation:
    unknown = t1 is None
    return Operation(
        client=client, key=key, kind=kind, input=input, output=None if unknown else output,
        outcome=Outcome.UNKNOWN if unknown else Outcome.OK, invoked=t0,
        returned=math.inf if t1 is None else t1,
    )


def read(value: Value, t0: float, t1: float | None, client: int = 0, key: str = "k") -> Operation:
    return _op(Kind.READ, None, value, t0, t1, client, key)


def write(value: Value, t0: float, t1: float | None, client: int = 0, key: str = "k") -> Operation:
    return _op(Kind.WRITE, value, None, t0, t1, client, key)


def cas(expected: Value, new: Value, swapped: bool, t0: float, t1: float | None, client: int = 0,
        key: str = "k") -> Operation:
    return _op(Kind.CAS, (expected, new), swapped, t0, t1, client, key)


def failed(op: Operation) -> Operation:
    return dataclasses.replace(op, outcome=Outcome.FAIL, output=None)


def simulate(rng: random.Random, clients: int, ops_per_client: int, keys: Sequence[str],
             p_unknown: float = 0.05, p_fail: float = 0.02,
             ) -> tuple[list[Operation], dict[str, Value]]:
    """A linearizable history of ``clients`` sequential clients on registers ``keys``, with
    unique written values, and each key's final value."""
    # (linearization point, client, invoked, returned, key, kind, fate) per operation.
    plans = []
    for client in range(clients):
        t = rng.uniform(0.0, 1.0)
        for _ in range(ops_per_client):
            duration = rng.uniform(0.1, 3.0)
            point = t + rng.random() * duration
            fate = rng.random()
            outcome = (Outcome.UNKNOWN if fate < p_unknown
                       else Outcome.FAIL if fate < p_unknown + p_fail else Outcome.OK)
            kind = rng.choice((Kind.READ, Kind.READ, Kind.WRITE, Kind.CAS))
            plans.append((point, client, t, t + duration, rng.choice(keys), kind, outcome))
            t += duration + rng.uniform(0.0, 0.5)
    state: dict[str, Value] = {}
    history = []
    written = 0
    for _, client, invoked, returned, key, kind, outcome in sorted(plans):
        current = state.get(key)
        effective = outcome is Outcome.OK or (outcome is Outcome.UNKNOWN and rng.random() < 0.5)
        input: Value | tuple[Value, Value] = None
        output: Value | bool = None
        after: Value = current
        if kind is Kind.READ:
            output = current
        else:
            written += 1
            if kind is Kind.WRITE:
                input = after = written
            else:
                expected = current if rng.random() < 0.6 else rng.choice((None, written - 1))
                input, output = (expected, written), current == expected
                after = written if output else current
            if effective:
                state[key] = after
        if outcome is Outcome.UNKNOWN:
            output, returned = None, math.inf
        elif outcome is Outcome.FAIL:
            output = None
        history.append(Operation(client, key, kind, input, output, outcome, invoked, returned))
    history.sort(key=lambda op: op.invoked)
    return history, {key: state.get(key) for key in keys}
