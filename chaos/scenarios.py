"""Named chaos scenarios (issue 8), as Chaos Mesh and Pumba name their faults, and the runner that
plays one against a lab.

The flow, in the order of the code: a scenario's choice is pure. Given the lab's ``Members``
(controller and node names, the leader now) and a seeded ``random.Random``, it returns the
``Step`` to take: which action on which hosts, grouped into sides (a kill's targets, a
partition's groups, a one-way partition's senders and receivers). The same seed and the same
members make the same choices, and the choices are tested without a lab. ``SCENARIOS`` names
them. The runner, ``run_scenario``, is the shell: it waits ``interval``, asks the lab who leads
when the scenario needs to know, takes the step through ``Faults`` (``chaos.faults.LabFaults``),
holds it (``restart_delay`` for a kill, ``hold`` for the others), heals, and goes on until
``duration`` has passed or ``stop`` is set. Everything is healed in a ``finally`` (the faults'
context manager), also on Ctrl-C. It is synchronous: it sleeps on ``stop`` and runs in a thread
of its own, or in the main thread while the workload's event loop runs in another.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal, Protocol, Self

from chaos.timeline import FaultEvent
from controlplane.lab import Host

log = logging.getLogger(__name__)

Action = Literal["kill", "pause", "partition", "partition-one-way"]
#: How long the runner waits for a unique leader before it skips a step that needs one: well
#: past pysyncobj's election (0.4-1.4 s) and a restarted controller catching up.
LEADER_TIMEOUT_S = 15.0
LEADER_POLL_S = 0.5
#: The gap between the kills (and between the restarts) of a staggered kill.
STAGGER_S = 1.0


class ScenarioError(Exception):
    """A scenario cannot run on this lab (unknown name, too few hosts); the message says why."""


@dataclass(frozen=True)
class Members:
    """What a scenario chooses from: host names in the state file's order and the controller
    that leads now (None when no unique one does)."""

    controllers: tuple[str, ...]
    nodes: tuple[str, ...]
    leader: str | None = None


@dataclass(frozen=True)
class Step:
    """One fault. ``sides``: for ``kill`` and ``pause`` one side, the targets; for
    ``partition`` the groups cut from each other; for ``partition-one-way`` (senders,
    receivers). ``staggered``: a kill's targets go down one after another and come back one
    after another."""

    action: Action
    sides: tuple[tuple[str, ...], ...]
    staggered: bool = False


def majority(count: int) -> int:
    """The smallest majority of ``count`` Raft members."""
    return count // 2 + 1


def _leader(m: Members) -> str:
    if m.leader is None:
        raise ScenarioError("this scenario needs the leader, and no unique one answers")
    return m.leader


def _controllers(m: Members, least: int = 1) -> tuple[str, ...]:
    if len(m.controllers) < least:
        raise ScenarioError(f"this scenario needs {least} or more controllers, the lab has "
                            f"{len(m.controllers)}")
    return m.controllers


def _nodes(m: Members) -> tuple[str, ...]:
    if not m.nodes:
        raise ScenarioError("this scenario needs nodes, the lab has none")
    return m.nodes


def _all_but_leader(m: Members) -> tuple[str, ...]:
    leader = _leader(m)
    others = tuple(c for c in _controllers(m, 2) if c != leader)
    if len(others) != len(m.controllers) - 1:
        raise ScenarioError(f"the leader {leader} is none of the controllers {m.controllers}")
    return others


# -- the choices (pure) ------------------------------------------------------------------------

def kill_leader(m: Members, rng: random.Random) -> Step:
    return Step("kill", ((_leader(m),),))


def kill_random(m: Members, rng: random.Random) -> Step:
    return Step("kill", ((rng.choice(_controllers(m)),),))


def kill_majority(m: Members, rng: random.Random) -> Step:
    controllers = _controllers(m)
    return Step("kill", (tuple(rng.sample(controllers, majority(len(controllers)))),))


def kill_all_staggered(m: Members, rng: random.Random) -> Step:
    order = list(_controllers(m))
    rng.shuffle(order)
    return Step("kill", (tuple(order),), staggered=True)


def pause_leader(m: Members, rng: random.Random) -> Step:
    return Step("pause", ((_leader(m),),))


def partition_leader(m: Members, rng: random.Random) -> Step:
    """The leader alone on one side; the other controllers and every node on the other."""
    return Step("partition", ((_leader(m),), _all_but_leader(m) + m.nodes))


def partition_majority(m: Members, rng: random.Random) -> Step:
    """A random minority (1 to less than half) against the rest, which is a majority; nodes
    stay connected to both sides."""
    controllers = _controllers(m, 3)
    size = rng.randint(1, len(controllers) - majority(len(controllers)))
    minority = set(rng.sample(controllers, size))
    return Step("partition", (tuple(c for c in controllers if c in minority),
                              tuple(c for c in controllers if c not in minority)))


def partition_one_way(m: Members, rng: random.Random) -> Step:
    """What the other controllers send to the leader is dropped; what it sends arrives."""
    return Step("partition-one-way", (_all_but_leader(m), (_leader(m),)))


def kill_agent(m: Members, rng: random.Random) -> Step:
    return Step("kill", ((rng.choice(_nodes(m)),),))


def partition_agent(m: Members, rng: random.Random) -> Step:
    """One node cut off from every controller; the other nodes still reach it."""
    return Step("partition", ((rng.choice(_nodes(m)),), _controllers(m)))


Choose = Callable[[Members, random.Random], Step]


@dataclass(frozen=True)
class Scenario:
    name: str
    choose: Choose
    #: Whether ``choose`` needs ``Members.leader``: the runner asks the lab only then.
    needs_leader: bool
    help: str


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("kill-leader", kill_leader, True,
             "SIGKILL the leader, start it again after --restart-delay"),
    Scenario("kill-random", kill_random, False,
             "SIGKILL a random controller, start it again after --restart-delay"),
    Scenario("kill-majority", kill_majority, False,
             "SIGKILL a majority of the controllers, start them again after --restart-delay"),
    Scenario("kill-all-staggered", kill_all_staggered, False,
             "SIGKILL every controller one after another, then start them one after another"),
    Scenario("pause-leader", pause_leader, True,
             "SIGSTOP the leader for --hold, then SIGCONT"),
    Scenario("partition-leader", partition_leader, True,
             "cut the leader from the other controllers and the nodes for --hold"),
    Scenario("partition-majority", partition_majority, False,
             "cut a random minority of the controllers from the majority for --hold"),
    Scenario("partition-one-way", partition_one_way, True,
             "drop what the other controllers send to the leader for --hold"),
    Scenario("kill-agent", kill_agent, False,
             "SIGKILL a random node agent, start it again after --restart-delay"),
    Scenario("partition-agent", partition_agent, False,
             "cut a random node from every controller for --hold"),
)}


def check_scenario(name: str, members: Members) -> Scenario:
    """The scenario called ``name``, once a dry run of its choice (with any controller standing
    in for the leader) has shown it fits the lab: ScenarioError before any fault otherwise."""
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise ScenarioError(f"no scenario {name!r} (there are {', '.join(SCENARIOS)})")
    stand_in = members.controllers[0] if members.controllers else None
    scenario.choose(replace(members, leader=members.leader or stand_in), random.Random(0))
    return scenario


# -- the runner --------------------------------------------------------------------------------

class Faults(Protocol):
    """What the runner needs of the lab: ``chaos.faults.LabFaults``."""

    timeline: list[FaultEvent]

    def __enter__(self) -> Self: ...
    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None: ...
    def controllers(self) -> list[Host]: ...
    def nodes(self) -> list[Host]: ...
    def host(self, name: str) -> Host: ...
    def leader(self) -> Host | None: ...
    def kill(self, *hosts: Host) -> FaultEvent: ...
    def restart(self, host: Host) -> FaultEvent | None: ...
    def pause(self, *hosts: Host) -> FaultEvent: ...
    def partition(self, groups: Sequence[Sequence[Host]]) -> FaultEvent: ...
    def partition_one_way(self, src_hosts: Sequence[Host],
                          dst_hosts: Sequence[Host]) -> FaultEvent: ...
    def heal(self) -> list[FaultEvent]: ...


def run_scenario(name: str, faults: Faults, *, duration: float, interval: float, hold: float,
                 restart_delay: float, seed: int, stop: threading.Event,
                 stagger: float = STAGGER_S, max_steps: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> list[FaultEvent]:
    """Play scenario ``name`` for ``duration`` seconds: wait ``interval``, take a step, hold it,
    heal; again until the time is up, ``max_steps`` steps were taken (the issue's "killed and
    restarted, staggered, 10 times") or ``stop`` is set (a step begun runs its course unless
    ``stop`` cuts it short). Every fault is healed before the next and all of them on the way
    out, whatever happens. Returns the run's fault timeline; each event's ``extra`` names the
    scenario, the step's number and the leader when the step was chosen."""
    members = Members(tuple(h.name for h in faults.controllers()),
                      tuple(h.name for h in faults.nodes()))
    scenario = check_scenario(name, members)
    rng = random.Random(seed)
    first = len(faults.timeline)
    deadline = clock() + duration

    def over(wait: float) -> bool:
        """Wait (at most until the deadline); whether the run is over."""
        return stop.wait(max(0.0, min(wait, deadline - clock()))) or clock() >= deadline

    with faults:
        number = 0
        while number != max_steps and not over(interval):
            leader = _await_leader(faults, over) if scenario.needs_leader else None
            if scenario.needs_leader and leader is None:
                log.warning("%s: no unique leader within %.0f s; step skipped", name,
                            LEADER_TIMEOUT_S)
                continue
            step = scenario.choose(replace(members, leader=leader), rng)
            number += 1
            mark = len(faults.timeline)
            _take(step, faults, hold=hold, restart_delay=restart_delay, stagger=stagger,
                  stop=stop)
            faults.heal()
            for event in faults.timeline[mark:]:
                event.extra.update(scenario=name, step=number, leader=leader)
    return faults.timeline[first:]


def _await_leader(faults: Faults, over: Callable[[float], bool]) -> str | None:
    """The unique leader's name, asked until one answers, ``LEADER_TIMEOUT_S`` pass or the run
    is over."""
    give_up = time.monotonic() + LEADER_TIMEOUT_S
    while True:
        leader = faults.leader()
        if leader is not None:
            return leader.name
        if time.monotonic() >= give_up or over(LEADER_POLL_S):
            return None


def _take(step: Step, faults: Faults, *, hold: float, restart_delay: float, stagger: float,
          stop: threading.Event) -> None:
    """Inject ``step`` and hold it; undo the staggered restarts (the caller's heal undoes the
    rest). Returns early once ``stop`` is set: the heal follows."""
    sides = [[faults.host(name) for name in side] for side in step.sides]
    if step.action == "kill" and step.staggered:
        if _one_by_one(sides[0], faults.kill, stagger, stop) or stop.wait(restart_delay):
            return
        _one_by_one(sides[0], faults.restart, stagger, stop)
        return
    if step.action == "kill":
        faults.kill(*sides[0])
    elif step.action == "pause":
        faults.pause(*sides[0])
    elif step.action == "partition":
        faults.partition(sides)
    else:
        faults.partition_one_way(sides[0], sides[1])
    stop.wait(restart_delay if step.action == "kill" else hold)


def _one_by_one(hosts: list[Host], act: Callable[[Host], object], gap: float,
                stop: threading.Event) -> bool:
    """``act`` on each host, ``gap`` seconds apart; True when ``stop`` cut it short."""
    for i, host in enumerate(hosts):
        if i and stop.wait(gap):
            return True
        act(host)
    return False
