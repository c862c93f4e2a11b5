"""The Canary strategy (Corral's extension, docs/deployment-strategies.md): the new template
takes the Deployment's replicas in steps, ``setWeight`` shares and pauses between them.

Pure core first, in code order:

- ``Step``, ``steps_of``: ``spec.strategy.canary.steps`` read.
- ``split``: the new and the old side's counts at a weight (new: ``ceil(replicas * w / 100)``).
- ``weight_at``: the weight in effect at a step (a pause keeps the last ``setWeight``'s).
- ``holder_of``: the old ReplicaSet that keeps the old share (the stable one: the one that
  served when the rollout began, recorded on the new ReplicaSet).
- ``moves``: the sizes that bring both sides to a split without losing availability: the side
  that grows first, the side that shrinks only by its unavailable replicas and by the available
  ones beyond ``replicas``. Also how a resized Deployment keeps its share.
- ``decide``: one pass, from a ``State``: sizes to write, else the step's bookkeeping (advance,
  begin a timed pause, pause the Deployment) or a wait, as a ``Plan``.

Then the I/O shell, ``rollout(r)``: reads the ``State`` off the ``Rollout`` (the step index,
the stable ReplicaSet and the pause start from the new ReplicaSet's annotations, what the
Deployment was paused for), carries out the ``Plan`` and writes the status.

Defined behaviour beyond the doc's: the first rollout (no old replicas) and a rollback to the
stable ReplicaSet (an old one names the new one as its stable) go straight to 100%, without
steps; a paused Deployment keeps its current share (under a resize too) but starts no step; a
resized one keeps the share of its step, recomputed for the new size (ceil), both sides
moving by the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ...client.events import NORMAL
from . import revisions, shared
from . import status as status_
from .constants import (
    CANARY_PAUSE_START,
    CANARY_REVISION,
    CANARY_STABLE,
    CANARY_STEP,
    CANARY_STEP_STARTED,
    MSG_CANARY_DONE,
    MSG_CANARY_PAUSE,
    MSG_CANARY_PAUSE_RESUME,
    MSG_CANARY_ROLLBACK,
    MSG_CANARY_WEIGHT,
    PAUSED_FOR,
)
from .replicas import ReplicaSetView
from .rollout import RECHECK_SLACK, Obj, Rollout

# ---------------------------------------------------------------- steps and shares


@dataclass(frozen=True)
class Step:
    """One canary step: ``setWeight`` (``weight``) or ``pause`` (``duration`` seconds; None:
    until the Deployment is resumed)."""

    weight: int | None = None
    pause: bool = False
    duration: int | None = None


def steps_of(deployment: Obj) -> tuple[Step, ...]:
    canary = ((deployment.get("spec") or {}).get("strategy") or {}).get("canary") or {}
    steps = []
    for raw in canary.get("steps") or ():
        if raw.get("setWeight") is not None:
            steps.append(Step(weight=int(raw["setWeight"])))
        elif raw.get("pause") is not None:
            duration = (raw.get("pause") or {}).get("duration")
            steps.append(Step(pause=True,
                              duration=int(duration) if duration is not None else None))
    return tuple(steps)


def split(replicas: int, weight: int) -> tuple[int, int]:
    """(new, old) at ``weight`` percent: new is ``ceil(replicas * weight / 100)`` (so at least
    one for a weight above 0), old the rest."""
    weight = min(max(weight, 0), 100)
    new = min(-(-replicas * weight // 100), replicas)
    return new, replicas - new


def weight_at(steps: Sequence[Step], index: int) -> int:
    """The weight in effect at step ``index``: the last ``setWeight`` at or before it (0 before
    any); 100 once past the last step."""
    if index >= len(steps):
        return 100
    for step in reversed(steps[:index + 1]):
        if step.weight is not None:
            return step.weight
    return 0


def describe(steps: Sequence[Step], index: int) -> str:
    """What step ``index`` is, for its Event."""
    step = steps[index]
    n, total = index + 1, len(steps)
    if step.weight is not None:
        return MSG_CANARY_WEIGHT.format(n=n, total=total, weight=step.weight)
    if step.duration is not None:
        return MSG_CANARY_PAUSE.format(n=n, total=total, seconds=step.duration)
    return MSG_CANARY_PAUSE_RESUME.format(n=n, total=total)


def stable_of(old: Sequence[ReplicaSetView],
              unfinished: Mapping[str, str] | None = None) -> str | None:
    """The ReplicaSet serving as a rollout begins: the old one with the most available
    replicas (then the most replicas, then the oldest); None when no old one has any. When
    that one is itself an unfinished canary (``unfinished``: its name -> the stable one it
    recorded), the stable one it recorded, if still there."""
    serving = [rs for rs in old if rs.replicas > 0 or rs.pods > 0]
    if not serving:
        return None
    leader = min(serving, key=lambda rs: (-rs.available, -rs.replicas, rs.created))
    recorded = (unfinished or {}).get(leader.name)
    if recorded and recorded != leader.name and any(rs.name == recorded for rs in old):
        return recorded
    return leader.name


def holder_of(old: Sequence[ReplicaSetView], stable: str | None) -> str | None:
    """The old ReplicaSet that grows when the old share must (a lower weight, a larger
    Deployment): the stable one while it exists, else the largest old one with replicas;
    None when there is no old side (then the new one takes all)."""
    if stable is None:
        return None
    if any(rs.name == stable for rs in old):
        return stable
    sized = [rs for rs in old if rs.replicas > 0]
    return max(sized, key=lambda rs: (rs.replicas, rs.created)).name if sized else None


def _shrink(rs: ReplicaSetView, want: int, budget: int) -> tuple[int, int]:
    """How many of ``want`` replicas ``rs`` may lose: its unavailable ones for free (its
    ReplicaSet deletes those first), available ones out of ``budget``; and the budget left."""
    free = rs.replicas - min(rs.available, rs.replicas)
    down = min(want, free + budget)
    return down, budget - max(down - free, 0)


def moves(new: ReplicaSetView, old: Sequence[ReplicaSetView], holder: str | None, *,
          targets: tuple[int, int], replicas: int) -> tuple[int | None, list[tuple[str, int]]]:
    """(the new ReplicaSet's size or None to leave it, the old ones' sizes) that bring the sides
    towards ``targets`` (new, old): a side below its target grows at once (the old side by its
    ``holder``); a side above shrinks only as far as availability stays at ``replicas``: its
    unavailable replicas first, then the available ones beyond ``replicas`` counted over both
    sides. The old side shrinks others before the holder, newest first."""
    new_target, old_target = targets
    new_size: int | None = new_target if new.replicas < new_target else None
    old_sizes: dict[str, int] = {}
    old_total = sum(rs.replicas for rs in old)
    if old_total < old_target and holder is not None:
        rs = next(rs for rs in old if rs.name == holder)
        old_sizes[holder] = rs.replicas + old_target - old_total
    budget = max(sum(min(rs.available, rs.replicas) for rs in (new, *old)) - replicas, 0)
    if new.replicas > new_target:
        down, budget = _shrink(new, new.replicas - new_target, budget)
        if down:
            new_size = new.replicas - down
    excess = old_total - old_target
    order = sorted((rs for rs in old if rs.name != holder), key=lambda rs: rs.created,
                   reverse=True) + [rs for rs in old if rs.name == holder]
    for rs in order:
        if excess <= 0:
            break
        if rs.replicas == 0:
            continue
        down, budget = _shrink(rs, min(excess, rs.replicas), budget)
        if down:
            old_sizes[rs.name] = rs.replicas - down
            excess -= down
    return new_size, [(rs.name, old_sizes[rs.name]) for rs in old if rs.name in old_sizes]


def settled(new: ReplicaSetView, old: Sequence[ReplicaSetView],
            targets: tuple[int, int]) -> bool:
    """Both sides at ``targets``, every replica available, no pod beyond them left."""
    new_target, old_target = targets
    return (new.replicas == new.available == new.pods == new_target
            and sum(rs.replicas for rs in old) == old_target
            and sum(min(rs.available, rs.replicas) for rs in old) == old_target
            and sum(rs.pods for rs in old) == old_target)


# ---------------------------------------------------------------- one pass, decided


@dataclass(frozen=True)
class State:
    """What a pass decides on."""

    steps: tuple[Step, ...]
    replicas: int
    #: The new ReplicaSet (size 0, no name, when it is still to be created).
    new: ReplicaSetView
    old: tuple[ReplicaSetView, ...]
    #: The step the new ReplicaSet is at.
    index: int
    #: The ReplicaSet that served when the rollout began (None: none did).
    stable: str | None
    now: datetime
    #: The new ReplicaSet is the stable one of an old one: a rollback to it.
    rollback: bool = False
    paused: bool = False
    #: The Deployment was paused for this very step and is not any more.
    resumed: bool = False
    #: When the timed pause of this step began.
    pause_started: datetime | None = None


@dataclass(frozen=True)
class Plan:
    """What a pass does: sizes, else at most one of advance, start_pause and pause."""

    #: Size of the new ReplicaSet (None: as it is).
    new_size: int | None = None
    old_sizes: list[tuple[str, int]] = field(default_factory=list)
    #: Record this step index (the pause start cleared): the current step is complete.
    advance: int | None = None
    #: Record now as the start of this step's timed pause.
    start_pause: bool = False
    #: Set spec.paused for this step.
    pause: bool = False
    #: Look again in this many seconds (a timed pause running).
    wait: float | None = None
    #: A wait on purpose (a timed pause under way, a Deployment of 0 replicas): the progress
    #: deadline does not run out meanwhile.
    hold: bool = False
    #: No step left: the new side takes all replicas.
    done: bool = False


def pause_left(s: State) -> float | None:
    """Seconds left of the timed pause under way at this step (None: none began)."""
    if s.pause_started is None or s.rollback or s.index >= len(s.steps):
        return None
    duration = s.steps[s.index].duration
    if duration is None:
        return None
    return (s.pause_started + timedelta(seconds=duration) - s.now).total_seconds()


def targets_of(s: State) -> tuple[int, int]:
    """(new, old) counts a pass aims at."""
    if s.index >= len(s.steps) or s.rollback or holder_of(s.old, s.stable) is None:
        return s.replicas, 0
    return split(s.replicas, weight_at(s.steps, s.index))


def decide(s: State) -> Plan:
    """The next move of a canary (see the module docstring). A timed pause under way holds
    the deadline whatever the pods do (a Pod that flaps does not make it late), and a
    Deployment of 0 replicas only sizes: no step is complete with nothing to run."""
    holder = holder_of(s.old, s.stable)
    done = s.index >= len(s.steps) or s.rollback or holder is None
    targets = targets_of(s)
    new_size, old_sizes = moves(s.new, s.old, holder, targets=targets, replicas=s.replicas)
    left = pause_left(s)
    running = left is not None and left > 0
    wait, hold = (left, True) if running else (None, s.replicas == 0)
    if new_size is not None or old_sizes:
        return Plan(new_size=new_size, old_sizes=old_sizes, wait=wait, hold=hold, done=done)
    if done or s.paused or s.replicas == 0 or not settled(s.new, s.old, targets):
        return Plan(wait=wait, hold=hold, done=done)
    step = s.steps[s.index]
    if step.weight is not None:
        return Plan(advance=s.index + 1)
    if step.duration is not None:
        if s.pause_started is None:
            return Plan(start_pause=True, wait=float(step.duration), hold=True)
        if running:
            return Plan(wait=wait, hold=True)
        return Plan(advance=s.index + 1)
    if s.resumed:
        return Plan(advance=s.index + 1)
    return Plan(pause=True)


# ---------------------------------------------------------------- the I/O shell


_annotations = shared.annotations


def _current(rs: Obj) -> bool:
    """``rs``'s canary annotations were written for the revision it has (not for an earlier
    life before a rollback made it new again)."""
    return _annotations(rs).get(CANARY_REVISION) == str(revisions.revision_of(rs))


def _index(rs: Obj) -> int:
    try:
        return max(int(_annotations(rs).get(CANARY_STEP) or 0), 0)
    except ValueError:
        return 0


def _unfinished(r: Rollout, steps: Sequence[Step]) -> dict[str, str]:
    """Old ReplicaSets whose canary did not finish (current bookkeeping, a step left): name ->
    the stable one each recorded."""
    return {rs["metadata"]["name"]: _annotations(rs).get(CANARY_STABLE) or ""
            for rs in r.old_rss if _current(rs) and _index(rs) < len(steps)}


def read_state(r: Rollout) -> State:
    """The ``State`` of ``r``: the new ReplicaSet's bookkeeping when current, else a fresh
    start (step 0, the stable one as the old side is now)."""
    new = r.new_rs
    old = tuple(r.view(rs) for rs in r.old_rss)
    steps = steps_of(r.deployment)
    if new is None or not _current(new):
        rollback = new is not None and any(
            _annotations(rs).get(CANARY_STABLE) == new["metadata"]["name"] and _current(rs)
            and (r.view(rs).replicas or r.view(rs).pods) for rs in r.old_rss)
        return State(steps=steps, replicas=r.replicas,
                     new=r.view(new) if new is not None else ReplicaSetView("", 0),
                     old=old, index=len(steps) if rollback else 0,
                     stable=stable_of(old, _unfinished(r, steps)),
                     now=r.now, rollback=rollback, paused=r.paused)
    annotations = _annotations(new)
    index = _index(new)
    return State(steps=steps, replicas=r.replicas, new=r.view(new), old=old, index=index,
                 stable=annotations.get(CANARY_STABLE) or None, now=r.now, paused=r.paused,
                 resumed=not r.paused and _annotations(r.deployment).get(PAUSED_FOR) ==
                 shared.paused_key(new, index),
                 pause_started=status_.parse_time(annotations.get(CANARY_PAUSE_START)))


def _bookkeeping(state: State, revision: int) -> dict[str, str | None]:
    """The annotations that begin the canary of a new ReplicaSet at ``revision``."""
    return {CANARY_REVISION: str(revision), CANARY_STEP: str(state.index),
            CANARY_STABLE: state.stable or "", CANARY_PAUSE_START: None}


async def rollout(r: Rollout) -> None:
    if await shared.synced_without_new(r):  # no new template while paused
        return
    state = read_state(r)
    plan = decide(state)
    if r.new_rs is None:
        await _create(r, state, plan)
    else:
        await _carry_out(r, state, plan)
    if plan.hold:
        r.hold_deadline()
    await shared.finish(r)


async def _create(r: Rollout, state: State, plan: Plan) -> None:
    """The new ReplicaSet at step 0's size (all replicas when there is no old side), its
    bookkeeping on it from the start."""
    annotations = {k: v for k, v in _bookkeeping(state, r.next_revision).items()
                   if v is not None}
    await r.ensure_new_replica_set(replicas=plan.new_size or 0, annotations=annotations)
    for name, size in plan.old_sizes:
        await r.scale(r.by_name(name), size)
    if not plan.done and state.steps:
        await r.record(NORMAL, CANARY_STEP_STARTED, describe(state.steps, 0))
    r.note_progress()


async def _carry_out(r: Rollout, state: State, plan: Plan) -> None:
    new = r.new_rs
    assert new is not None
    if not _current(new):  # adopted, or rolled back to: its canary starts here
        new = await r.annotate(new, _bookkeeping(state, revisions.revision_of(new)))
        message = MSG_CANARY_ROLLBACK.format(rs=new["metadata"]["name"], replicas=r.replicas) \
            if state.rollback else describe(state.steps, 0) if state.steps and not plan.done \
            else None
        if message:
            await r.record(NORMAL, CANARY_STEP_STARTED, message)
        r.note_progress()
    if plan.new_size is not None:
        new = await _scaled(r, new, plan.new_size)
    for name, size in plan.old_sizes:
        await r.scale(r.by_name(name), size)
    if plan.new_size is not None or plan.old_sizes:
        r.note_progress()
    if plan.advance is not None:
        await r.annotate(new, {CANARY_STEP: str(plan.advance), CANARY_PAUSE_START: None})
        message = describe(state.steps, plan.advance) if plan.advance < len(state.steps) \
            else MSG_CANARY_DONE.format(rs=new["metadata"]["name"], replicas=r.replicas)
        await r.record(NORMAL, CANARY_STEP_STARTED, message)
        r.note_progress()
    elif plan.start_pause:
        start = status_.timestamp_after(r.now)  # the pause never comes short
        await r.annotate(new, {CANARY_PAUSE_START: start})
        assert plan.wait is not None
        began = status_.parse_time(start)
        assert began is not None
        r.requeue((began - r.now).total_seconds() + plan.wait + RECHECK_SLACK)
        r.note_progress()  # the wait begins: the deadline counts from here after it
    elif plan.pause:
        await r.pause({PAUSED_FOR: shared.paused_key(new, state.index)})
    elif plan.wait is not None:
        r.requeue(plan.wait + RECHECK_SLACK)


async def _scaled(r: Rollout, rs: Obj, size: int) -> Obj:
    await r.scale(rs, size)
    assert r.new_rs is not None
    return r.new_rs
