"""The chaos run catches a real bug: a lab whose controllers read without the Raft barrier
(``--unsafe-local-reads``, reads from the local replica) serves stale data while the leader is
cut off, and ``corral chaos`` says so (the checker's own tests show it on hand-made histories).
Its own module: one lab at a time, and this one is unsafe by design."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labcli import lab_up

from chaos.linearizability import Verdict as LinVerdict
from chaos.report import Verdict
from chaos.run import ChaosOptions, run_chaos

pytestmark = [pytest.mark.privileged, pytest.mark.slow]


@pytest.fixture(scope="module")
def unsafe_lab(require: Callable[[str], None], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Path]:
    with lab_up(require, tmp_path_factory.mktemp("unsafe"), "u", "--controllers", "3",
                "--nodes", "0", "--unsafe-local-reads") as (_, directory):
        yield directory


def test_reads_without_a_barrier_are_caught(unsafe_lab: Path, tmp_path: Path) -> None:
    report = run_chaos(ChaosOptions("partition-leader", lab_dir=unsafe_lab, out=tmp_path,
                                    duration=30, interval=5, hold=5, seed=4))
    print(report.summary())
    assert report.verdict is Verdict.FAIL
    assert report.linearizability.verdict is LinVerdict.NOT_LINEARIZABLE
    stale = [key for key, result in report.linearizability.keys.items()
             if result.verdict is LinVerdict.NOT_LINEARIZABLE]
    witness = report.linearizability.keys[stale[0]].witness
    assert witness is not None and witness.stuck.kind.value == "read", witness
