"""The scenarios' choices, without a lab: a table of what each scenario picks on a 3-controller
lab for seed 7; the same seed repeats the same choices; majorities and minorities have the
sizes Raft means; a one-way partition drops what goes to the leader; a scenario that does not
fit the lab is refused before any fault. Then the runner over a recording fake of the lab's
faults: staggered kills and restarts in the chosen order, a heal after every step and on the
way out (also when a fault fails or ``stop`` is set), events tagged with their step."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from chaos import scenarios
from chaos.faults import FaultError
from chaos.scenarios import (
    SCENARIOS,
    Members,
    ScenarioError,
    Step,
    check_scenario,
    kill_all_staggered,
    majority,
    run_scenario,
)
from chaos.timeline import FaultEvent
from controlplane.lab import Host, plan

C3 = ("lab-c1", "lab-c2", "lab-c3")
LAB = Members(C3, ("lab-n1", "lab-n2"), leader="lab-c2")

#: scenario -> its first step on LAB with random.Random(7).
FIRST_STEP_SEED_7 = {
    "kill-leader": Step("kill", (("lab-c2",),)),
    "kill-random": Step("kill", (("lab-c2",),)),
    "kill-majority": Step("kill", (("lab-c2", "lab-c1"),)),
    "kill-all-staggered": Step("kill", (("lab-c3", "lab-c1", "lab-c2"),), staggered=True),
    "pause-leader": Step("pause", (("lab-c2",),)),
    "partition-leader": Step("partition", (("lab-c2",), ("lab-c1", "lab-c3", "lab-n1",
                                                          "lab-n2"))),
    "partition-majority": Step("partition", (("lab-c1",), ("lab-c2", "lab-c3"))),
    "partition-one-way": Step("partition-one-way", (("lab-c1", "lab-c3"), ("lab-c2",))),
    "kill-agent": Step("kill", (("lab-n2",),)),
    "partition-agent": Step("partition", (("lab-n2",), C3)),
}


def members(controllers: int, nodes: int = 2, leader: int | None = 1) -> Members:
    return Members(tuple(f"lab-c{i}" for i in range(1, controllers + 1)),
                   tuple(f"lab-n{i}" for i in range(1, nodes + 1)),
                   None if leader is None else f"lab-c{leader}")


def steps(name: str, m: Members, seed: int, count: int = 20) -> list[Step]:
    rng = random.Random(seed)
    return [SCENARIOS[name].choose(m, rng) for _ in range(count)]


# -- the choices -------------------------------------------------------------------------------

def test_the_table_names_every_scenario() -> None:
    assert set(FIRST_STEP_SEED_7) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(FIRST_STEP_SEED_7))
def test_first_step_for_seed_7(name: str) -> None:
    assert SCENARIOS[name].choose(LAB, random.Random(7)) == FIRST_STEP_SEED_7[name]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_seed_repeats_its_choices(name: str) -> None:
    m = members(5, 3, leader=4)
    assert steps(name, m, 11) == steps(name, m, 11)


@pytest.mark.parametrize("name", ["kill-random", "kill-majority", "kill-all-staggered",
                                  "partition-majority", "kill-agent", "partition-agent"])
def test_random_scenarios_vary_with_the_seed(name: str) -> None:
    m = members(5, 3)
    assert len({tuple(steps(name, m, seed, count=3)) for seed in range(20)}) > 1


@pytest.mark.parametrize("controllers", [1, 3, 5, 7])
def test_kill_majority_kills_the_smallest_majority(controllers: int) -> None:
    m = members(controllers)
    for step in steps("kill-majority", m, 3):
        (targets,) = step.sides
        assert len(targets) == majority(controllers) == controllers // 2 + 1
        assert len(set(targets)) == len(targets) and set(targets) <= set(m.controllers)


@pytest.mark.parametrize("controllers", [3, 5, 7])
def test_partition_majority_splits_controllers_into_a_minority_and_a_majority(
        controllers: int) -> None:
    m = members(controllers)
    sizes = set()
    for step in steps("partition-majority", m, 5, count=50):
        minority, rest = step.sides
        assert 1 <= len(minority) < majority(controllers) <= len(rest)
        assert sorted(minority + rest) == sorted(m.controllers)  # nodes are on no side
        sizes.add(len(minority))
    assert sizes == set(range(1, controllers - majority(controllers) + 1))


def test_kill_all_staggered_kills_every_controller_once_in_a_seeded_order() -> None:
    m = members(5)
    orders = {step.sides[0] for step in steps("kill-all-staggered", m, 2)}
    assert all(step.staggered for step in steps("kill-all-staggered", m, 2))
    assert all(sorted(order) == sorted(m.controllers) for order in orders)
    assert len(orders) > 1


def test_one_way_drops_what_the_others_send_to_the_leader() -> None:
    senders, receivers = SCENARIOS["partition-one-way"].choose(members(3, leader=3),
                                                                random.Random(0)).sides
    assert (senders, receivers) == (("lab-c1", "lab-c2"), ("lab-c3",))


def test_partition_leader_keeps_the_nodes_with_the_other_controllers() -> None:
    step = SCENARIOS["partition-leader"].choose(members(3, 2, leader=1), random.Random(0))
    assert step.sides == (("lab-c1",), ("lab-c2", "lab-c3", "lab-n1", "lab-n2"))


@pytest.mark.parametrize("name", sorted(n for n, s in SCENARIOS.items() if s.needs_leader))
def test_leader_scenarios_refuse_to_choose_without_one(name: str) -> None:
    with pytest.raises(ScenarioError, match="leader"):
        SCENARIOS[name].choose(members(3, leader=None), random.Random(0))


@pytest.mark.parametrize("name", sorted(n for n, s in SCENARIOS.items() if not s.needs_leader))
def test_other_scenarios_ignore_the_leader(name: str) -> None:
    assert steps(name, members(3, leader=None), 1) == steps(name, members(3, leader=2), 1)


@pytest.mark.parametrize(("name", "m", "error"), [
    ("kill-what", LAB, "no scenario 'kill-what' \\(there are kill-leader, "),
    ("kill-agent", members(3, nodes=0), "needs nodes"),
    ("partition-agent", members(3, nodes=0), "needs nodes"),
    ("partition-majority", members(2), "needs 3 or more controllers"),
    ("partition-one-way", members(1), "needs 2 or more controllers"),
    ("partition-leader", members(1, nodes=0), "needs 2 or more controllers"),
    ("partition-leader", Members(C3, (), leader="lab-c9"), "lab-c9 is none of"),
])
def test_check_scenario_refuses_what_does_not_fit(name: str, m: Members, error: str) -> None:
    with pytest.raises(ScenarioError, match=error):
        check_scenario(name, m)


def test_check_scenario_needs_no_leader_to_check_a_leader_scenario() -> None:
    assert check_scenario("pause-leader", members(3, leader=None)).name == "pause-leader"


# -- the runner --------------------------------------------------------------------------------

class RecordingFaults:
    """The runner's view of a lab, recording each call and its time; ``stop`` is set at the
    ``stop_after``-th heal, ``fail_on`` makes that action raise."""

    def __init__(self, controllers: int = 3, nodes: int = 2, leader: str | None = "lab-c2",
                 stop: threading.Event | None = None, stop_after: int = 0,
                 fail_on: str = "") -> None:
        self.state = plan("lab", Path("/nonexistent"), controllers, nodes)
        self.timeline: list[FaultEvent] = []
        self.calls: list[tuple[str, Any]] = []
        self.times: list[float] = []
        self._leader = leader
        self._stop, self._stop_after, self._fail_on = stop, stop_after, fail_on

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.heal()

    def controllers(self) -> list[Host]:
        return self.state.controllers

    def nodes(self) -> list[Host]:
        return self.state.nodes

    def host(self, name: str) -> Host:
        return self.state.host(name)

    def leader(self) -> Host | None:
        return None if self._leader is None else self.host(self._leader)

    def _record(self, kind: str, what: Any) -> FaultEvent:
        if kind == self._fail_on:
            raise FaultError(f"{kind} failed")
        self.calls.append((kind, what))
        self.times.append(time.monotonic())
        event = FaultEvent(kind, [], time.monotonic())
        self.timeline.append(event)
        return event

    def kill(self, *hosts: Host) -> FaultEvent:
        return self._record("kill", [h.name for h in hosts])

    def restart(self, host: Host) -> FaultEvent | None:
        self._record("restart", [host.name])
        return None

    def pause(self, *hosts: Host) -> FaultEvent:
        return self._record("pause", [h.name for h in hosts])

    def partition(self, groups: Sequence[Sequence[Host]]) -> FaultEvent:
        return self._record("partition", [[h.name for h in g] for g in groups])

    def partition_one_way(self, src_hosts: Sequence[Host],
                          dst_hosts: Sequence[Host]) -> FaultEvent:
        return self._record("partition-one-way", ([h.name for h in src_hosts],
                                                  [h.name for h in dst_hosts]))

    def heal(self) -> list[FaultEvent]:
        self.calls.append(("heal", None))
        open_events = [e for e in self.timeline if e.end is None]
        for event in open_events:
            event.end = time.monotonic()
        if self._stop is not None and self.calls.count(("heal", None)) == self._stop_after:
            self._stop.set()
        return open_events


def run(name: str, faults: RecordingFaults, stop: threading.Event, **options: Any
        ) -> list[FaultEvent]:
    settings: dict[str, Any] = {"duration": 60.0, "interval": 0.0, "hold": 0.0,
                                "restart_delay": 0.0, "seed": 7, "stop": stop, **options}
    return run_scenario(name, faults, **settings)


def test_kill_all_staggered_kills_then_restarts_in_one_order_with_gaps() -> None:
    stop = threading.Event()
    faults = RecordingFaults(stop=stop, stop_after=1)
    timeline = run("kill-all-staggered", faults, stop, stagger=0.05)
    order = list(kill_all_staggered(members(3), random.Random(7)).sides[0])
    assert faults.calls == ([("kill", [h]) for h in order] + [("restart", [h]) for h in order]
                            + [("heal", None), ("heal", None)])
    gaps = [b - a for a, b in zip(faults.times, faults.times[1:], strict=False)]
    assert all(gap >= 0.045 for i, gap in enumerate(gaps) if i != len(order) - 1)
    assert [e.extra for e in timeline] == [
        {"scenario": "kill-all-staggered", "step": 1, "leader": None}] * 6
    assert all(e.end is not None for e in timeline)


@pytest.mark.parametrize(("name", "first"), [
    ("kill-leader", ("kill", ["lab-c2"])),
    ("pause-leader", ("pause", ["lab-c2"])),
    ("partition-leader", ("partition", [["lab-c2"], ["lab-c1", "lab-c3", "lab-n1", "lab-n2"]])),
    ("partition-one-way", ("partition-one-way", (["lab-c1", "lab-c3"], ["lab-c2"]))),
])
def test_each_step_is_healed_before_the_next(name: str, first: tuple[str, Any]) -> None:
    stop = threading.Event()
    faults = RecordingFaults(stop=stop, stop_after=3)
    timeline = run(name, faults, stop)
    assert faults.calls == [first, ("heal", None)] * 3 + [("heal", None)]
    assert [e.extra["step"] for e in timeline] == [1, 2, 3]
    assert {e.extra["leader"] for e in timeline} == {"lab-c2"}


def test_max_steps_ends_the_run() -> None:
    faults = RecordingFaults()
    run("kill-all-staggered", faults, threading.Event(), max_steps=10, stagger=0.0)
    assert [kind for kind, _ in faults.calls].count("heal") == 11
    assert [e.extra["step"] for e in faults.timeline][-1] == 10
    assert len(faults.timeline) == 10 * 2 * 3  # each step: 3 kills, 3 restarts


def test_a_run_shorter_than_the_interval_injects_nothing_and_heals() -> None:
    faults = RecordingFaults()
    assert run("kill-random", faults, threading.Event(), duration=0.05, interval=1.0) == []
    assert faults.calls == [("heal", None)]


def test_stop_cuts_a_hold_short_and_heals() -> None:
    stop = threading.Event()
    faults = RecordingFaults()
    threading.Timer(0.2, stop.set).start()
    began = time.monotonic()
    run("partition-majority", faults, stop, hold=30.0)
    assert time.monotonic() - began < 5
    assert [kind for kind, _ in faults.calls] == ["partition", "heal", "heal"]


def test_a_failed_fault_still_heals_and_tells() -> None:
    faults = RecordingFaults(fail_on="pause")
    with pytest.raises(FaultError, match="pause failed"):
        run("pause-leader", faults, threading.Event())
    assert faults.calls == [("heal", None)]


def test_no_leader_skips_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scenarios, "LEADER_TIMEOUT_S", 0.0)
    faults = RecordingFaults(leader=None)
    run("kill-leader", faults, threading.Event(), duration=0.3, interval=0.05)
    assert faults.calls == [("heal", None)]


def test_a_scenario_that_does_not_fit_fails_before_any_fault() -> None:
    faults = RecordingFaults(nodes=0)
    with pytest.raises(ScenarioError, match="needs nodes"):
        run("kill-agent", faults, threading.Event())
    assert faults.calls == []
