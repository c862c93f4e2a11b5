"""Recovery after faults, on hand-made histories: which writes count as the first acknowledged one
after a fault (a table), the failed and unknown operations during it, nearest-rank percentiles,
and that a fault without recovery is missing, never 0."""

from __future__ import annotations

import json

import pytest
from chaos_histories import cas, failed, read, write

from chaos.history import Operation
from chaos.recovery import (
    Percentiles,
    Recovery,
    measure_recovery,
    nearest_rank,
    percentiles,
)
from chaos.timeline import FaultEvent

#: A fault from 10 s to 20 s; each case: the history, and the seconds from the fault's start to
#: its first acknowledged write (None: none).
AFTER_START: dict[str, tuple[list[Operation], float | None]] = {
    "a write after the start": ([write(1, 11, 12.5)], 2.5),
    "a write invoked at the start counts": ([write(1, 10, 10.5)], 0.5),
    "a write invoked before the start does not count": ([write(1, 9, 13)], None),
    "the earliest return wins, not the earliest invocation": (
        [write(1, 11, 15, client=0), write(2, 12, 13, client=1)], 3.0),
    "a cas that swapped is an acknowledged write": ([cas(None, 1, True, 11, 12)], 2.0),
    "a cas that did not swap is not": ([cas(5, 1, False, 11, 12)], None),
    "a read is not": ([read(None, 11, 12)], None),
    "a failed write is not": ([failed(write(1, 11, 12))], None),
    "an unknown write is not": ([write(1, 11, None)], None),
    "a write after the heal still counts": ([write(1, 25, 26)], 16.0),
}


@pytest.mark.parametrize("name", AFTER_START)
def test_first_acknowledged_write_after_the_start(name: str) -> None:
    history, expected = AFTER_START[name]
    (fault,) = measure_recovery(history, [FaultEvent("kill", ["lab-c1"], 10.0, 20.0)]).faults
    assert fault.after_start == expected


def test_after_heal_is_measured_from_the_end() -> None:
    history = [write(1, 11, 12), write(2, 20.5, 21)]
    (fault,) = measure_recovery(history, [FaultEvent("pause", ["lab-c2"], 10.0, 20.0)]).faults
    assert (fault.after_start, fault.after_heal) == (2.0, 1.0)


def test_a_fault_never_healed_has_no_heal_time_and_is_not_missing_one() -> None:
    recovery = measure_recovery([write(1, 11, 12)], [FaultEvent("kill", ["lab-c1"], 10.0)])
    assert recovery.faults[0].after_heal is None
    assert recovery.after_heal == Percentiles(0, None, None, None, missing=0)


def test_failed_and_unknown_operations_invoked_during_the_fault() -> None:
    history = [failed(write(1, 9, 9.5)),        # before: not counted
               failed(read(None, 10, 10.5)),    # at the start: counted
               write(2, 12, None),              # unknown
               cas(1, 3, False, 15, None),      # unknown
               failed(write(4, 19.9, 20)),      # counted
               write(5, 20, None),              # at the heal: after it
               write(6, 12, 13)]                # ok: not counted
    faults = [FaultEvent("partition", ["lab-c1"], 10.0, 20.0),
              FaultEvent("kill", ["lab-c2"], 14.0)]   # never healed: until the end
    during, unhealed = measure_recovery(history, faults).faults
    assert (during.failed, during.unknown) == (2, 2)
    assert (unhealed.failed, unhealed.unknown) == (1, 2)


def test_percentiles_over_faults_count_the_ones_without_recovery_as_missing() -> None:
    history = [write(i, 10.0 * i + 1, 10.0 * i + 1 + 0.1 * i, client=i) for i in range(1, 4)]
    faults = [FaultEvent("kill", ["lab-c1"], 10.0 * i, 10.0 * i + 5) for i in range(1, 5)]
    recovery = measure_recovery(history, faults)
    assert [f.after_start for f in recovery.faults] == pytest.approx([1.1, 1.2, 1.3, None])
    assert recovery.after_start.count == 3
    assert recovery.after_start.missing == 1
    assert recovery.after_start.p50 == pytest.approx(1.2)
    assert recovery.after_start.max == pytest.approx(1.3)


def test_no_faults_and_no_writes_report_nothing_rather_than_zero() -> None:
    assert measure_recovery([], []).after_start == Percentiles(0, None, None, None)
    nothing = measure_recovery([read(None, 0, 1)], [FaultEvent("kill", ["lab-c1"], 0.0, 1.0)])
    assert nothing.after_start == Percentiles(0, None, None, None, missing=1)
    assert nothing.after_heal == Percentiles(0, None, None, None, missing=1)


@pytest.mark.parametrize(("samples", "p50", "p99", "top"), [
    ([3.0], 3.0, 3.0, 3.0),
    ([2.0, 1.0], 1.0, 2.0, 2.0),
    ([float(i) for i in range(100, 0, -1)], 50.0, 99.0, 100.0),
    ([float(i) for i in range(1, 21)], 10.0, 20.0, 20.0),
])
def test_nearest_rank_percentiles(samples: list[float], p50: float, p99: float,
                                  top: float) -> None:
    assert percentiles(samples) == Percentiles(len(samples), p50, p99, top)


def test_nearest_rank_is_always_a_sample() -> None:
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0) == 1.0


def test_json_round_trip() -> None:
    history = [write(1, 11, 12), failed(write(2, 10.5, 11)), write(3, 22, None)]
    recovery = measure_recovery(history, [FaultEvent("kill", ["lab-c1", "lab-c2"], 10.0, 20.0),
                                          FaultEvent("pause", ["lab-c3"], 21.0)])
    text = json.dumps(recovery.to_json(), allow_nan=False)
    assert Recovery.from_json(json.loads(text)) == recovery
