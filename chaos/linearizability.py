"""Linearizability of a history, per key: Wing & Gong's search with Lowe's memoisation, the shape
of porcupine's checker.

Flow: ``check_history`` splits the history per key (P-compositionality: it is linearizable iff
each key's is), checks each with ``check_operations`` under its own budget, and folds the
verdicts. ``check_operations`` drops failed operations (they applied nothing), lets the model
trim the rest (``Model.prepare``), lays them out as a doubly linked list of call and return
entries in time order (a call before a return at the same instant: touching operations count as
concurrent), and searches from the head: it linearizes the first call the model accepts in the current state,
unless the pair (set of linearized operations, state) was explored before (Lowe's cache), and
unlinks its call and return; reaching a return means that operation can no longer be placed
after the current prefix, so it backtracks. An empty list is a linearization; an empty stack at
a return proves there is none. An unknown operation returns at +infinity, so it may be placed
anywhere after its invocation, and placing it after everything else is the same as never.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from chaos.history import Operation, Outcome, split_by_key
from chaos.model import Model, Register

#: The time one key's search may take by default. Ten clients on a key check in well under a
#: second; a search that runs this long is a pathological one, and its cache grows by about
#: 30 MB a second (measured), so the bound is memory as much as time.
DEFAULT_SECONDS_PER_KEY = 10.0
#: Search steps between two readings of the budget's clock.
CLOCK_EVERY_STEPS = 1024


class Verdict(StrEnum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Budget:
    """How far one key's search may go before its verdict is "unknown" (never a pass): at most
    ``steps`` search steps and ``seconds`` on ``clock``; None is no limit. The clock is injected
    so that tests and replays decide the same way."""

    steps: int | None = None
    seconds: float | None = DEFAULT_SECONDS_PER_KEY
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class Witness:
    """Why a key is not linearizable: the longest prefix the search could linearize, the model's
    state after it, and an operation whose return came before it could be placed after them."""

    prefix: tuple[Operation, ...]
    state: Any
    stuck: Operation

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": [op.to_json() for op in self.prefix],
            "state": self.state,
            "stuck": self.stuck.to_json(),
        }


@dataclass(frozen=True)
class KeyResult:
    """One key's verdict; ``exhausted`` names the budget ("steps" or "time") of an unknown one."""

    verdict: Verdict
    operations: int
    steps: int
    witness: Witness | None = None
    exhausted: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "operations": self.operations,
            "steps": self.steps,
            "witness": None if self.witness is None else self.witness.to_json(),
            "exhausted": self.exhausted,
        }


@dataclass(frozen=True)
class Result:
    verdict: Verdict
    keys: dict[str, KeyResult] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "keys": {key: result.to_json() for key, result in self.keys.items()},
        }


def check_history(
    history: Iterable[Operation], model: Model[Any] | None = None, budget: Budget = Budget()
) -> Result:
    """Every key's verdict (a register each by default) and the overall one: not linearizable if
    a key is not, else unknown if a key is unknown, else linearizable."""
    model = Register() if model is None else model
    keys = {key: check_operations(ops, model, budget) for key, ops in split_by_key(history).items()}
    verdicts = {result.verdict for result in keys.values()}
    for verdict in (Verdict.NOT_LINEARIZABLE, Verdict.UNKNOWN):
        if verdict in verdicts:
            return Result(verdict, keys)
    return Result(Verdict.LINEARIZABLE, keys)


def check_operations(
    ops: Sequence[Operation], model: Model[Any] | None = None, budget: Budget = Budget()
) -> KeyResult:
    """The verdict on one key's operations (see the module's docstring for the search)."""
    model = Register() if model is None else model
    ops = model.prepare([op for op in ops if op.outcome is not Outcome.FAIL])
    n = len(ops)
    # Entries 1..2n in time order between the sentinels head (0) and tail (2n + 1).
    head, tail = 0, 2 * n + 1
    timeline = sorted(
        [(op.invoked, 0, i) for i, op in enumerate(ops)]
        + [(op.returned, 1, i) for i, op in enumerate(ops)]
    )
    op_of = [0] * (tail + 1)
    is_call = [False] * (tail + 1)
    match = [0] * (tail + 1)
    call_of = [0] * n
    for e, (_, is_return, i) in enumerate(timeline, start=1):
        op_of[e] = i
        if is_return:
            match[call_of[i]] = e
        else:
            is_call[e] = True
            call_of[i] = e
    nxt = list(range(1, tail + 2))
    prv = list(range(-1, tail))
    bit = [1 << i for i in range(n)]

    max_steps = math.inf if budget.steps is None else budget.steps
    deadline = math.inf if budget.seconds is None else budget.clock() + budget.seconds
    next_clock_step = CLOCK_EVERY_STEPS
    step = model.step
    state = model.init()
    linearized = 0
    stack: list[tuple[int, Any]] = []
    seen: set[tuple[int, Any]] = set()
    best: tuple[list[int], Any, int] = ([], state, 0)
    best_depth = -1
    steps = 0
    e = nxt[head]
    while e != tail:
        steps += 1
        if steps > max_steps:
            return KeyResult(Verdict.UNKNOWN, n, steps - 1, exhausted="steps")
        if steps >= next_clock_step:
            if budget.clock() > deadline:
                return KeyResult(Verdict.UNKNOWN, n, steps, exhausted="time")
            next_clock_step += CLOCK_EVERY_STEPS
        if is_call[e]:
            ok, after = step(state, ops[op_of[e]])
            if ok:
                memo = (linearized | bit[op_of[e]], after)
                if memo not in seen:
                    seen.add(memo)
                    stack.append((e, state))
                    linearized, state = memo
                    # Lift: unlink the call, then its return.
                    for x in (e, match[e]):
                        nxt[prv[x]] = nxt[x]
                        prv[nxt[x]] = prv[x]
                    e = nxt[head]
                    continue
            e = nxt[e]
            continue
        if len(stack) > best_depth:
            best_depth = len(stack)
            best = ([op_of[call] for call, _ in stack], state, op_of[e])
        if not stack:
            prefix, at, stuck = best
            witness = Witness(tuple(ops[i] for i in prefix), at, ops[stuck])
            return KeyResult(Verdict.NOT_LINEARIZABLE, n, steps, witness=witness)
        e, state = stack.pop()
        linearized ^= bit[op_of[e]]
        # Unlift: relink in the reverse order, the return, then the call.
        for x in (match[e], e):
            nxt[prv[x]] = x
            prv[nxt[x]] = x
        e = nxt[e]
    return KeyResult(Verdict.LINEARIZABLE, n, steps)
