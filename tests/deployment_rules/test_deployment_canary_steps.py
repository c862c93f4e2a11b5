"""The Canary strategy's pure core: the share of a weight, the weight in effect at a step, the
moves towards a split that keep availability, and one pass's decision; then a whole canary
simulated pass by pass (pods available one pass after they are asked for) for random steps
and sizes, checking the doc's promises; then the shell over the fake ``RolloutIO``: the
bookkeeping on the new ReplicaSet (a new leader resumes at its step; a rollback starts
again)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_deployment_strategies import FakeIO, deployment, pods, replica_set, rollout

from controlplane.controllers.deployment import canary
from controlplane.controllers.deployment.canary import (
    Plan,
    State,
    Step,
    decide,
    holder_of,
    moves,
    split,
    stable_of,
    steps_of,
    targets_of,
    weight_at,
)
from controlplane.controllers.deployment.replicas import ReplicaSetView

T0 = datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
OLDER, NEWER = ("2024-01-01T10:00:00Z", ""), ("2024-01-01T11:00:00Z", "")


@pytest.mark.parametrize("replicas, weight, expect", [
    (10, 20, (2, 8)),
    (10, 25, (3, 7)),   # ceil
    (3, 1, (1, 2)),     # any weight above 0 is at least one pod
    (3, 0, (0, 3)),
    (3, 100, (3, 0)),
    (7, 50, (4, 3)),
    (1, 50, (1, 0)),
    (0, 50, (0, 0)),
    (10, 99, (10, 0)),
])
def test_split(replicas: int, weight: int, expect: tuple[int, int]) -> None:
    assert split(replicas, weight) == expect


STEPS = (Step(weight=20), Step(pause=True, duration=60), Step(weight=50), Step(pause=True))


@pytest.mark.parametrize("steps, index, expect", [
    (STEPS, 0, 20), (STEPS, 1, 20), (STEPS, 2, 50), (STEPS, 3, 50), (STEPS, 4, 100),
    ((Step(pause=True), Step(weight=30)), 0, 0),  # a pause before any weight: none yet
    ((), 0, 100),
])
def test_weight_at(steps: tuple[Step, ...], index: int, expect: int) -> None:
    assert weight_at(steps, index) == expect


def test_steps_of_reads_the_spec() -> None:
    d = {"spec": {"strategy": {"type": "Canary", "canary": {"steps": [
        {"setWeight": 20}, {"pause": {"duration": 60}}, {"pause": {}}]}}}}
    assert steps_of(d) == (Step(weight=20), Step(pause=True, duration=60), Step(pause=True))
    assert steps_of({"spec": {"strategy": {"type": "Canary"}}}) == ()


def rs(name: str, replicas: int, available: int | None = None, *, pods: int | None = None,
       created: tuple[str, str] = OLDER) -> ReplicaSetView:
    available = replicas if available is None else available
    return ReplicaSetView(name=name, replicas=replicas, available=available,
                          pods=replicas if pods is None else pods, created=created)


def test_stable_and_holder() -> None:
    v1, v2 = rs("v1", 8, created=OLDER), rs("v2", 2, created=NEWER)
    assert stable_of([v1, v2]) == "v1"  # the most available
    assert stable_of([rs("v1", 0, pods=0)]) is None  # nothing serves: a first rollout
    assert holder_of([v1, v2], "v1") == "v1"
    assert holder_of([v1, v2], "gone") == "v1"  # the largest then
    assert holder_of([v1], None) is None


# targets (new, old); sizes as (new size or None, [(old, size)])
@pytest.mark.parametrize("new, old, targets, expect", [
    # a step begins: the new side grows, the old one waits for it
    (rs("n", 0), [rs("v1", 10)], (2, 8), (2, [])),
    (rs("n", 2, 0), [rs("v1", 10)], (2, 8), (None, [])),
    # the new pods are available: the old side gives up as many
    (rs("n", 2), [rs("v1", 10)], (2, 8), (None, [("v1", 8)])),
    # one of them only: one old goes
    (rs("n", 2, 1), [rs("v1", 10)], (2, 8), (None, [("v1", 9)])),
    # unavailable old replicas go first, for free
    (rs("n", 2, 0), [rs("v1", 10, 7)], (2, 8), (None, [("v1", 8)])),
    # a lower weight: the old side (its holder) grows first, the new one shrinks once it can
    (rs("n", 5), [rs("v1", 5)], (2, 8), (None, [("v1", 8)])),
    (rs("n", 5), [rs("v1", 8, 5)], (2, 8), (None, [])),
    (rs("n", 5), [rs("v1", 8)], (2, 8), (2, [])),
    # an abandoned canary (v2) goes before the stable one (v1, the holder)
    (rs("n", 2), [rs("v1", 8), rs("v2", 2, created=NEWER)], (2, 8),
     (None, [("v2", 0)])),
    # resized 10 -> 5 at 20%: both shrink within what is available beyond 5
    (rs("n", 2), [rs("v1", 8)], (1, 4), (1, [("v1", 4)])),
])
def test_moves(new: ReplicaSetView, old: list[ReplicaSetView], targets: tuple[int, int],
               expect: tuple[int | None, list[tuple[str, int]]]) -> None:
    assert moves(new, old, "v1", targets=targets, replicas=sum(targets)) == expect


def state(new: ReplicaSetView, old: list[ReplicaSetView], index: int, **kw: object) -> State:
    fields = {"steps": STEPS, "replicas": 10, "new": new, "old": tuple(old), "index": index,
              "stable": "v1", "now": T0, **kw}
    return State(**fields)  # type: ignore[arg-type]


def test_decide_a_weight_step_completes_once_settled() -> None:
    assert decide(state(rs("n", 2), [rs("v1", 8)], 0)) == Plan(advance=1)
    not_gone = state(rs("n", 2), [rs("v1", 8, pods=9)], 0)  # an old pod still running
    assert decide(not_gone) == Plan()


def test_decide_a_timed_pause() -> None:
    start = decide(state(rs("n", 2), [rs("v1", 8)], 1))
    assert (start.start_pause, start.wait) == (True, 60.0)
    running = decide(state(rs("n", 2), [rs("v1", 8)], 1, pause_started=T0 - timedelta(seconds=20)))
    assert (running.advance, running.wait) == (None, 40.0)
    over = decide(state(rs("n", 2), [rs("v1", 8)], 1, pause_started=T0 - timedelta(seconds=60)))
    assert over.advance == 2


def test_decide_an_indefinite_pause_pauses_once() -> None:
    settled = [rs("n", 5), [rs("v1", 5)]]
    assert decide(state(*settled, 3)).pause
    assert decide(state(*settled, 3, paused=True)) == Plan()  # waits for the user
    assert decide(state(*settled, 3, resumed=True)).advance == 4  # resumed: the next step


def test_decide_paused_keeps_the_share_but_starts_no_step() -> None:
    # resized to 20 while paused at 50%: both sides follow, no step begins
    plan = decide(state(rs("n", 5), [rs("v1", 5)], 2, replicas=20, paused=True))
    assert (plan.new_size, plan.old_sizes, plan.advance) == (10, [("v1", 10)], None)


def test_decide_done_rollback_and_first_rollout_take_all() -> None:
    assert decide(state(rs("n", 8), [rs("v1", 2)], 4)) == Plan(new_size=10, done=True)
    rollback = state(rs("v1", 8), [rs("v2", 2, created=NEWER)], 0, rollback=True)
    assert targets_of(rollback) == (10, 0) and decide(rollback).new_size == 10
    first = state(rs("n", 0), [], 0, stable=None)
    assert decide(first) == Plan(new_size=10, done=True)


# ---------------------------------------------------------------- a whole canary, simulated

step_lists = st.lists(st.one_of(
    st.integers(0, 100).map(lambda w: Step(weight=w)),
    st.integers(0, 5).map(lambda s: Step(pause=True, duration=s)),
    st.just(Step(pause=True))), max_size=6)


@settings(max_examples=300, deadline=None, database=None)
@given(steps=step_lists, replicas=st.integers(1, 12))
def test_a_simulated_canary_keeps_its_promises(steps: list[Step], replicas: int) -> None:
    """Pods become available one pass after they are asked for; a paused Deployment is resumed
    by the user on the next pass. Each weight step settles at its share, availability never
    drops below replicas, pods never exceed replicas plus the step's new ones (the side that
    grows), and the canary ends at all new."""
    world = {"new": [0, 0], "v1": [replicas, replicas]}  # name -> [replicas, available]
    index, paused, resumed, started = 0, False, False, None
    now = T0
    shares: list[tuple[int, int]] = []
    last = (0, replicas)  # the sides when the current step began
    for _ in range(200):
        view = {n: ReplicaSetView(n, size, available=avail, pods=size, created=created)
                for (n, (size, avail)), created in zip(world.items(), (NEWER, OLDER))}
        s = State(steps=tuple(steps), replicas=replicas, new=view["new"], old=(view["v1"],),
                  index=index, stable="v1", now=now, paused=paused, resumed=resumed,
                  pause_started=started)
        plan = decide(s)
        for name, size in [*([("new", plan.new_size)] if plan.new_size is not None else []),
                           *plan.old_sizes]:
            world[name] = [size, min(world[name][1], size)]  # unavailable ones go first
            assert sum(a for _, a in world.values()) >= replicas
        targets = targets_of(s)
        grown = max(targets[0] - last[0], 0) + max(targets[1] - last[1], 0)
        assert sum(size for size, _ in world.values()) <= replicas + grown
        if plan.advance is not None:
            if steps[index].weight is not None:
                shares.append((world["new"][0], world["v1"][0]))
            last = (world["new"][0], world["v1"][0])
            index, started, resumed = plan.advance, None, False
        if plan.start_pause:
            started = now
        if plan.wait is not None:
            now += timedelta(seconds=plan.wait)
        if paused:
            paused, resumed = False, True  # the user resumes
        if plan.pause:
            paused = True
        for pair in world.values():
            pair[1] = pair[0]  # what was asked for is available by the next pass
        if index >= len(steps) and world == {"new": [replicas, replicas], "v1": [0, 0]}:
            break
    else:
        pytest.fail(f"the canary did not finish: {world}, step {index}")
    assert shares == [split(replicas, step.weight) for step in steps
                      if step.weight is not None]


# ---------------------------------------------------------------- the shell, over the fake


def canary_deployment(image: str, replicas: int, steps: list) -> dict:
    d = deployment(image, replicas, strategy="Canary")
    d["spec"]["strategy"]["canary"] = {"steps": steps}
    return d


async def test_a_new_template_starts_at_step_0_with_its_stable_side() -> None:
    d = canary_deployment("v2", 10, [{"setWeight": 20}, {"pause": {}}])
    old = replica_set("web-old", "v1", 10)
    io = FakeIO(d, old)
    r = rollout(d, [old], io)
    await canary.rollout(r)
    assert r.new_rs is not None
    created = [w for w in io.writes if w[0] == "create"]
    assert created[0][2] == 2  # the first step's share, at once
    annotations = r.new_rs["metadata"]["annotations"]
    assert (annotations["deployment.corral.dev/canary-step"],
            annotations["deployment.corral.dev/canary-stable"],
            annotations["deployment.corral.dev/canary-revision"]) == ("0", "web-old", "2")
    assert ("CanaryStep", "Step 1/2: setWeight 20") in io.events
    assert not [w for w in io.writes if w[0] == "patch" and w[1] == "web-old"]  # waits


async def test_a_new_leader_resumes_at_the_recorded_step() -> None:
    """The step is on the new ReplicaSet: a pass with no memory of its own (another leader)
    at step 1 (an indefinite pause, settled) pauses the Deployment for that step."""
    d = canary_deployment("v2", 10, [{"setWeight": 20}, {"pause": {}}])
    old = replica_set("web-old", "v1", 8)
    new = replica_set("web-new", "v2", 2, revision=2)
    new["spec"]["template"] = copy.deepcopy(d["spec"]["template"])
    new["metadata"]["labels"] = {"pod-template-hash": "h2"}
    new["metadata"]["annotations"].update({
        "deployment.corral.dev/canary-step": "1", "deployment.corral.dev/canary-stable":
        "web-old", "deployment.corral.dev/canary-revision": "2"})
    io = FakeIO(d, old, new)
    r = rollout(d, [old], io, new=new,
                pod_map={old["metadata"]["uid"]: pods(old, 8),
                         new["metadata"]["uid"]: pods(new, 2)})
    await canary.rollout(r)
    assert r.deployment["spec"]["paused"] is True
    assert r.deployment["metadata"]["annotations"]["deployment.corral.dev/paused-for"] == \
        "h2/2/1"  # hash/revision/step
    assert not [w for w in io.writes if w[0] in ("patch", "create")]  # no size touched

    # resumed (kubectl rollout resume): the next step, not a second pause
    resumed = copy.deepcopy(io.objects["web"])
    resumed["spec"].pop("paused")
    io.objects["web"] = resumed
    r = rollout(resumed, [io.objects["web-old"]], io, new=io.objects["web-new"],
                pod_map={old["metadata"]["uid"]: pods(old, 8),
                         new["metadata"]["uid"]: pods(new, 2)})
    await canary.rollout(r)
    assert io.objects["web-new"]["metadata"]["annotations"][
        "deployment.corral.dev/canary-step"] == "2"
    assert "paused" not in io.objects["web"]["spec"]
    assert io.events[-1] == ("CanaryStep", "Steps done: replica set web-new takes all 10 "
                                           "replicas")


async def test_a_replica_set_rolled_back_to_starts_its_bookkeeping_again() -> None:
    """Annotations written for an earlier revision (before a rollback made the ReplicaSet new
    again) are stale: its canary starts at step 0 with the stable side as it is now."""
    d = canary_deployment("v1", 10, [{"setWeight": 50}])
    back = replica_set("web-back", "v1", 0, revision=3)  # rolled back to: revision 3
    back["spec"]["template"] = copy.deepcopy(d["spec"]["template"])
    back["metadata"]["annotations"].update({
        "deployment.corral.dev/canary-step": "1", "deployment.corral.dev/canary-stable": "x",
        "deployment.corral.dev/canary-revision": "1"})
    serving = replica_set("web-serving", "v2", 10, revision=2)
    io = FakeIO(d, back, serving)
    r = rollout(d, [serving], io, new=back)
    await canary.rollout(r)
    annotations = io.objects["web-back"]["metadata"]["annotations"]
    assert (annotations["deployment.corral.dev/canary-step"],
            annotations["deployment.corral.dev/canary-stable"],
            annotations["deployment.corral.dev/canary-revision"]) == ("0", "web-serving", "3")
    assert io.objects["web-back"]["spec"]["replicas"] == 5
    assert ("CanaryStep", "Step 1/1: setWeight 50") in io.events


# ---------------------------------------------------------------- review fixes


def test_decide_a_timed_pause_holds_the_deadline_while_a_pod_flaps() -> None:
    """20 minutes into a 3600 s pause one canary pod goes unready: not settled, yet the pause
    runs on and holds the deadline (and is looked at again when it ends)."""
    flapping = state(rs("n", 2, 1), [rs("v1", 8)], 1, pause_started=T0 - timedelta(minutes=20),
                     steps=(Step(weight=20), Step(pause=True, duration=3600)))
    plan = decide(flapping)
    assert (plan.hold, plan.wait, plan.advance) == (True, 2400.0, None)
    over = replace_started(flapping, T0 - timedelta(seconds=3600))
    assert not decide(over).hold  # the pause is over: the deadline counts again


def replace_started(s: State, started: datetime) -> State:
    return dataclasses.replace(s, pause_started=started)


def test_decide_zero_replicas_sizes_only_and_holds() -> None:
    plan = decide(state(rs("n", 0), [rs("v1", 0)], 0, replicas=0))
    assert plan == Plan(hold=True)  # no advance: nothing ran at this step
    shrink = decide(state(rs("n", 2), [rs("v1", 8)], 0, replicas=0))
    assert (shrink.new_size, shrink.old_sizes, shrink.advance, shrink.hold) == \
        (0, [("v1", 0)], None, True)


def test_stable_of_skips_an_aborted_canary_and_breaks_ties_to_the_oldest() -> None:
    v1, aborted = rs("v1", 5, created=OLDER), rs("v2", 5, created=NEWER)
    assert stable_of([v1, aborted]) == "v1"  # a tie: the oldest
    assert stable_of([aborted, v1]) == "v1"
    bigger = rs("v2", 6, created=NEWER)
    assert stable_of([v1, bigger], {"v2": "v1"}) == "v1"  # unfinished: its recorded stable
    assert stable_of([v1, bigger]) == "v2"
    assert stable_of([bigger], {"v2": "gone"}) == "v2"  # the recorded one is gone


async def test_a_flapping_pod_in_a_timed_pause_is_not_a_missed_deadline() -> None:
    """progressDeadlineSeconds 600, pause 3600 s begun 20 minutes ago (Progressing last
    updated then), one canary pod unready: Progressing stays True."""
    began = "2024-01-01T11:40:00Z"
    d = canary_deployment("v2", 10, [{"setWeight": 20}, {"pause": {"duration": 3600}}])
    d["status"] = {"observedGeneration": 2, "replicas": 10, "updatedReplicas": 2,
                   "readyReplicas": 10, "availableReplicas": 10, "conditions": [
                       {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                        "message": 'ReplicaSet "web-new" is progressing.',
                        "lastUpdateTime": began, "lastTransitionTime": began}]}
    old = replica_set("web-old", "v1", 8)
    new = replica_set("web-new", "v2", 2, revision=2)
    new["spec"]["template"] = copy.deepcopy(d["spec"]["template"])
    new["metadata"]["labels"] = {"pod-template-hash": "h2"}
    new["metadata"]["annotations"].update({
        "deployment.corral.dev/canary-step": "1", "deployment.corral.dev/canary-stable":
        "web-old", "deployment.corral.dev/canary-revision": "2",
        "deployment.corral.dev/canary-pause-start": began})
    new["status"]["availableReplicas"] = 1
    io = FakeIO(d, old, new)
    flapping = pods(new, 2)
    flapping[1]["status"] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "False", "lastTransitionTime": "2024-01-01T11:59:00Z"}]}
    r = rollout(d, [old], io, new=new, pod_map={old["metadata"]["uid"]: pods(old, 8),
                                                new["metadata"]["uid"]: flapping})
    await canary.rollout(r)
    progressing = next(c for c in io.objects["web"]["status"]["conditions"]
                       if c["type"] == "Progressing")
    assert progressing["status"] == "True"
    assert r.requeue_after is not None and 2399 < r.requeue_after < 2401
