"""``corral chaos`` against a real lab (issue 8): three controllers, two nodes, one lab for the
module (``lab down`` at the end, also on failure).

- The short CI versions of kill-leader, pause-leader and partition-leader (60 s each): the
  history is linearizable, no acknowledged write is lost, the replicas' hashes are equal after
  healing, and every fault is followed by an acknowledged write.
- Every controller killed and restarted, staggered, ten times: nothing acknowledged is lost.
- A Deployment rolls out and a node is lost while the leading controller is killed again and
  again: the workload converges on the surviving node and never has more than
  replicas + maxSurge pods at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from labcli import client, kubectl, lab_up, run

from chaos.faults import LabFaults
from chaos.report import Report, Verdict
from chaos.run import ChaosOptions, run_chaos
from controlplane.client import DEPLOYMENTS, PODS, FuncHandler, Informer

pytestmark = [pytest.mark.privileged, pytest.mark.slow]

#: The controllers' node grace for the node-loss test (the default 40 s is Kubernetes').
NODE_GRACE_S = 8
#: How often the node-loss test kills the leader.
KILL_EVERY_S = 15.0


@pytest.fixture(scope="module")
def lab_dir(require: Callable[[str], None], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Path]:
    with lab_up(require, tmp_path_factory.mktemp("chaos"), "x", "--controllers", "3",
                "--nodes", "2", "--node-monitor-grace-period", str(NODE_GRACE_S)
                ) as (_, directory):
        yield directory


def assert_passed(report: Report) -> None:
    checks = report.checks()
    assert checks == {name: Verdict.PASS for name in checks}, report.summary()
    assert report.verdict is Verdict.PASS


@pytest.mark.parametrize("scenario", ["kill-leader", "pause-leader", "partition-leader"])
def test_short_scenario_is_linearizable_and_loses_nothing(lab_dir: Path, tmp_path: Path,
                                                          scenario: str) -> None:
    report = run_chaos(ChaosOptions(scenario, lab_dir=lab_dir, out=tmp_path, duration=60,
                                    interval=8, hold=4, restart_delay=2, seed=8))
    print(report.summary())
    assert_passed(report)
    assert len(report.faults) >= 4
    recovered = report.recovery.after_start
    assert recovered.count == len(report.faults) and recovered.missing == 0, recovered
    for name in ("report.json", "history.jsonl", "summary.txt", "timeline.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_all_controllers_killed_and_restarted_staggered_ten_times(lab_dir: Path,
                                                                  tmp_path: Path) -> None:
    report = run_chaos(ChaosOptions("kill-all-staggered", lab_dir=lab_dir, out=tmp_path,
                                    duration=600, interval=1, restart_delay=1, steps=10,
                                    seed=9))
    print(report.summary())
    assert_passed(report)
    killed = [e for e in report.faults if e.kind == "kill"]
    assert len(killed) == 30 and {e.extra["step"] for e in killed} == set(range(1, 11))
    assert len(report.history) > 1000


def rolling_deployment(replicas: int) -> dict[str, Any]:
    # Pods leave an unreachable node 2 s after the taint, instead of Kubernetes' 300 s.
    tolerations = [{"key": key, "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 2}
                   for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "roll"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "roll"}},
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": "roll"}}, "spec": {
                         "tolerations": tolerations, "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "c", "image": "corral/base:latest",
                                         "imagePullPolicy": "IfNotPresent",
                                         "command": ["sleep", "3600"],
                                         "env": [{"name": "VERSION", "value": "1"}]}]}}}}


class PodCounter:
    """The most pods of the Deployment alive at once (not being deleted, not finished), from a
    watch that fails over between controllers: every event updates the count."""

    def __init__(self, kubeconfig: Path, urls: list[str]) -> None:
        self.kubeconfig, self.urls = kubeconfig, urls
        self.most = 0
        self.alive: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: run(self._main()), daemon=True)

    def _count(self, _obj: Any = None) -> None:
        alive = {p["metadata"]["name"] for p in self._informer.list()
                 if not p["metadata"].get("deletionTimestamp")
                 and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")}
        self.alive = alive
        self.most = max(self.most, len(alive))

    async def _main(self) -> None:
        async with client(self.kubeconfig, *self.urls) as api:
            self._informer = Informer(api, PODS, namespace="default",
                                      label_selector="app=roll")
            self._informer.add_handler(FuncHandler(self._count, lambda _o, _n: self._count(),
                                                   self._count))
            task = asyncio.create_task(self._informer.run())
            while not self._stop.is_set():
                await asyncio.sleep(0.1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_rollout_and_node_loss_while_leaders_are_killed(lab_dir: Path) -> None:
    replicas, surge = 4, 1
    kubeconfig = lab_dir / "admin.kubeconfig"
    faults = LabFaults(lab_dir)
    urls = faults.state.urls

    async def create() -> None:
        async with client(kubeconfig, *urls) as api:
            await api.create(DEPLOYMENTS, "default", rolling_deployment(replicas))

    async def deployment() -> dict[str, Any]:
        async with client(kubeconfig, *urls) as api:
            return await api.get(DEPLOYMENTS, "default", "roll")

    def converged(timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            d = run(deployment())
            s = d.get("status", {})
            if (s.get("observedGeneration", 0) >= d["metadata"]["generation"]
                    and s.get("updatedReplicas") == s.get("availableReplicas") == replicas
                    and s.get("replicas") == replicas):
                return d
            if time.monotonic() > deadline:
                shown = [kubectl(kubeconfig, "get", what, "-o", "wide").stdout
                         for what in ("nodes", "pods")]
                raise AssertionError(f"not converged: {s}\n" + "\n".join(shown))
            time.sleep(0.5)

    # The agents may still be backing off from the earlier tests' outages (watch retries grow
    # to 30 s, as client-go's): the rollout starts from a settled cluster.
    run(create())
    converged(150)
    stop = threading.Event()
    kills: list[str] = []
    errors: list[BaseException] = []

    def kill_leaders() -> None:
        # Every 15 s: a new leader's node-lifecycle loop starts its grace period afresh (as
        # Kubernetes' does: it trusts its own clock, not the Lease's), so kills faster than
        # grace + toleration would hold the eviction off for as long as they go on.
        try:
            wait = 1.0  # the first kill right after the rollout and the node loss begin
            while not stop.wait(wait):
                wait = KILL_EVERY_S
                leader = faults.leader()
                if leader is None:
                    continue
                faults.kill(leader)
                kills.append(leader.name)
                stop.wait(2.0)
                faults.restart(leader)
        except Exception as exc:  # noqa: BLE001 - told by the test below, not lost with the thread
            errors.append(exc)

    with faults, PodCounter(kubeconfig, urls) as counter:
        killer = threading.Thread(target=kill_leaders, daemon=True)
        killer.start()
        try:
            time.sleep(2.0)

            async def roll() -> None:
                async with client(kubeconfig, *urls) as api:
                    await api.patch(DEPLOYMENTS, "default", "roll", {"spec": {"template": {
                        "spec": {"containers": [{"name": "c", "env": [
                            {"name": "VERSION", "value": "2"}]}]}}}}, patch_type="strategic")

            run(roll())
            lost = faults.host(f"{faults.state.name}-n2")
            faults.kill(lost)  # the node is lost: its agent dies, its pods stay unanswered
            done = converged(150)
        finally:
            stop.set()
            killer.join(timeout=30)
    print(f"leaders killed: {kills}; most pods at once: {counter.most}")
    assert not errors, errors
    assert kills, "no leader was killed during the rollout"
    assert counter.most <= replicas + surge, counter.most
    assert done["status"]["updatedReplicas"] == replicas

    async def pods() -> list[dict[str, Any]]:
        async with client(kubeconfig, *urls) as api:
            return (await api.list(PODS, "default", label_selector="app=roll")).items

    alive = [p for p in run(pods()) if not p["metadata"].get("deletionTimestamp")]
    assert len(alive) == replicas
    assert {p["spec"]["nodeName"] for p in alive} == {f"{faults.state.name}-n1"}
    assert {c["value"] for p in alive for c in p["spec"]["containers"][0]["env"]} == {"2"}
