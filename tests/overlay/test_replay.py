"""overlay.replay: the RFC 6479 window at WireGuard's size (8128 packets).

The first table is the Linux module's replay self-test (also in wireguard-go's replay_test.go),
read as (counter, expected) rows; the rest probes the window edges, reordering and jumps, and a
hypothesis test compares the bitmap with a set-based model of the rule:

    accept n  <=>  0 <= n < REJECT_AFTER_MESSAGES and n unseen and greatest - n <= 8128
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.replay import (
    BACKTRACK_WORDS,
    COUNTER_WINDOW_SIZE,
    WORD_BITS,
    ReplayFilter,
)
from overlay.timers import REJECT_AFTER_MESSAGES

W = COUNTER_WINDOW_SIZE
T_LIM = W + 1
R = REJECT_AFTER_MESSAGES

KERNEL_TABLE = [
    (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False),
    (T_LIM, True), (T_LIM - 1, True), (T_LIM - 1, False), (T_LIM - 2, True), (2, True), (2, False),
    (T_LIM + 16, True), (3, False), (T_LIM + 16, False), (T_LIM * 4, True),
    (T_LIM * 4 - (T_LIM - 1), True), (10, False), (T_LIM * 4 - T_LIM, False),
    (T_LIM * 4 - (T_LIM + 1), False), (T_LIM * 4 - (T_LIM - 2), True), (T_LIM * 4 + 1 - T_LIM, False),
    (0, False), (R, False), (R - 1, True), (R, False), (R - 1, False), (R - 2, True), (R + 1, False),
    (R + 2, False), (R - 2, False), (R - 3, True), (0, False),
]


def test_constants() -> None:
    assert COUNTER_WINDOW_SIZE == 8128 == 8192 - 64
    assert BACKTRACK_WORDS * WORD_BITS == 8192
    assert REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1


def test_kernel_table() -> None:
    f = ReplayFilter()
    for step, (counter, expected) in enumerate(KERNEL_TABLE, 1):
        assert f.validate(counter) is expected, f"row {step}: {counter}"


def _run(counters: list[int]) -> list[bool]:
    f = ReplayFilter()
    return [f.validate(c) for c in counters]


@pytest.mark.parametrize(
    "name, counters, tail_expected",
    [
        # Bulk tests of the kernel self-test: a full window, then the edges behind it.
        ("ascending then 0", list(range(1, W + 1)) + [0, 0], [True, False]),
        ("ascending from 2 then 1, 0", list(range(2, W + 2)) + [1, 0], [True, False]),
        ("descending to 1", list(range(W + 1, 0, -1)), [True]),
        ("descending to 2 then 0", list(range(W + 2, 1, -1)) + [0], [False]),
        ("descending then ahead then 0", list(range(W, 0, -1)) + [W + 1, 0], [True, False]),
        ("descending then 0 then ahead", list(range(W, 0, -1)) + [0, W + 1], [True, True]),
    ],
)
def test_kernel_bulk(name: str, counters: list[int], tail_expected: list[bool]) -> None:
    results = _run(counters)
    head = results[: len(results) - len(tail_expected)]
    assert all(head), name
    assert results[len(head):] == tail_expected, name


@pytest.mark.parametrize("top", [W, W + 1, 8191, 8192, 8193, 10_000, 2**32 + 17, 2**63, R - 1])
def test_window_edges(top: int) -> None:
    f = ReplayFilter()
    assert f.validate(top)
    assert f.validate(top - W)  # exactly the window size behind: accepted
    assert not f.validate(top - W)
    assert not f.validate(top - W - 1)  # one further: too old
    assert f.validate(top - 1)
    assert not f.validate(top)


def test_zero_is_valid_once_and_negative_never() -> None:
    f = ReplayFilter()
    assert not f.validate(-1)
    assert f.validate(0)
    assert not f.validate(0)


def test_out_of_order_within_window() -> None:
    f = ReplayFilter()
    counters = list(range(W + 1))
    random.Random(6479).shuffle(counters)
    assert all(f.validate(c) for c in counters)
    assert not any(f.validate(c) for c in counters)


def test_interleaved_reordering_keeps_exactly_one_acceptance() -> None:
    f = ReplayFilter()
    rng = random.Random(1)
    # A stream delivered with bounded reordering (each packet at most 500 positions late) and
    # every packet duplicated: every counter is accepted exactly once.
    stream = sorted(range(50_000), key=lambda c: c + rng.randrange(500))
    stream = [c for c in stream for _ in range(2)]
    accepted = [c for c in stream if f.validate(c)]
    assert sorted(accepted) == list(range(50_000))


@pytest.mark.parametrize("jump", [63, 64, 65, W - 1, W, W + 1, 8192, 8192 * 3 + 5, 2**40])
def test_big_jumps(jump: int) -> None:
    f = ReplayFilter()
    base = 100
    for c in range(base - 50, base + 1):
        assert f.validate(c)
    assert f.validate(base + jump)
    for c in range(base - 50, base + 1):
        # Seen before: a replay if still inside the window, too old otherwise; never accepted.
        assert not f.validate(c)
    # Unseen counters just behind the new top are fresh: bits the jump passed over were cleared.
    for c in range(max(base + 1, base + jump - W), base + jump):
        assert f.validate(c), c
    if jump > W:
        assert not f.validate(base + jump - W - 1)


def test_wrapping_the_ring_many_times_clears_stale_bits() -> None:
    f = ReplayFilter()
    top = 0
    for _ in range(5):
        for c in range(top, top + 8192 + 64):
            assert f.validate(c)
        top += 8192 + 64
    # Counters that share ring slots with earlier laps are unseen and accepted.
    for c in range(top + 1, top + 200, 3):
        assert f.validate(c)


def test_rejected_counter_is_not_recorded() -> None:
    f = ReplayFilter()
    assert f.validate(20_000)
    assert not f.validate(20_000 - W - 1)
    assert not f.validate(R)  # out of range: does not move the window
    assert f.validate(20_000 - W)


def test_reset_forgets_everything() -> None:
    f = ReplayFilter()
    for c in (0, 5, 70, 9_000, 30_000):
        assert f.validate(c)
    f.reset()
    for c in (0, 5, 70, 9_000, 30_000):
        assert f.validate(c)


class Model:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.recent: list[int] = [0]  # the last accepted counters, to draw replays from
        self.greatest = 0

    def validate(self, n: int) -> bool:
        if not 0 <= n < REJECT_AFTER_MESSAGES or n in self.seen or self.greatest - n > W:
            return False
        self.seen.add(n)
        self.recent = [*self.recent[-49:], n]
        self.greatest = max(self.greatest, n)
        return True


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_matches_set_model(data: st.DataObject) -> None:
    f, model = ReplayFilter(), Model()
    steps = data.draw(st.integers(1, 200), label="steps")
    for _ in range(steps):
        counter = data.draw(
            st.one_of(
                st.integers(model.greatest - W - 70, model.greatest + 70),  # near the window
                st.integers(model.greatest - W - 2, model.greatest - W + 2),  # its lower edge
                st.integers(model.greatest, model.greatest + 3 * 8192),  # jumps
                st.sampled_from(model.recent),  # replays
                st.integers(R - 3, R + 3),  # the top of the counter space
                st.integers(0, 2**64 - 1),
            ),
            label="counter",
        )
        assert f.validate(counter) == model.validate(counter), counter
