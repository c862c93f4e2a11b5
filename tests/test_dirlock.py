"""One process at a time on a directory (``corral up``'s data dir, a lab under ``corral chaos``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chaos.run import CHAOS_LOCK, main
from controlplane.dirlock import Busy, holding
from controlplane.lab import Host, LabState


def test_a_held_directory_is_busy_until_released(tmp_path: Path) -> None:
    with holding(tmp_path, "a job"):
        with pytest.raises(Busy, match=f"another job is running on {tmp_path}"), \
                holding(tmp_path, "another job"):
            pass
    with holding(tmp_path, "another job"):  # released with the block
        pass


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from controlplane.dirlock import holding\n"
         "with holding(Path(sys.argv[1]), 'x'):\n print('held', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(Busy):
            with holding(tmp_path, "y"):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with holding(tmp_path, "y"):
        pass


def test_a_second_chaos_run_on_one_lab_is_refused_and_touches_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    controllers = [Host(f"t-c{i}", "controller", i, f"198.18.0.{10 + i}", 0, 0) for i in (1, 2, 3)]
    LabState("t", str(tmp_path), controllers).save()
    with holding(tmp_path, "corral chaos run", CHAOS_LOCK):
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main(["run", "kill-leader", "--lab-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"corral chaos: another corral chaos run is running on {tmp_path}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
