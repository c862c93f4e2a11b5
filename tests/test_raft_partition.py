"""The leader paused (SIGSTOP) and cut off (iptables) again and again under a write load: after
healing every member reaches the same state, and none ever deletes entries it had applied.

Regression test for the member that stayed behind forever after the chaos suite's
``partition-leader`` and ``pause-leader`` scenarios, and for pysyncobj's ``CRITICAL truncating
already-applied log entries`` (see ``_truncate_only_at_conflicts`` in raftstore/raft.py). The
cluster runs in a network namespace of its own (``raft_partition_harness.py``), so the test
needs root, ``ip`` and ``iptables``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

HARNESS = Path(__file__).with_name("raft_partition_harness.py")


@pytest.fixture
def netns(require: Callable[[str], None]) -> Iterator[str]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "iptables")):
        require("root, ip netns and iptables")
    name = f"rp{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        # Whatever the harness left running in the namespace (it kills its members itself).
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                              check=False)
        for pid in pids.stdout.split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_members_converge_after_leader_pauses_and_partitions(netns: str) -> None:
    run = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, str(HARNESS),
         "--faults", "pause,partition", "--rounds", "4", "--fault-seconds", "4",
         "--gap", "1.5", "--converge", "20"],
        capture_output=True, text=True, timeout=150, check=False,
    )
    assert run.stdout, f"harness failed:\n{run.stderr[-3000:]}"
    result = json.loads(run.stdout)
    report = json.dumps(result, indent=1)
    assert not result["critical"], f"a member deleted applied entries:\n{report}"
    assert result["converged_after"] is not None, (
        f"members did not reach one (revision, digest) within 20 s of the load stopping:\n"
        f"{report}"
    )
