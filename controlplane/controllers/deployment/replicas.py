"""How many replicas each ReplicaSet of a Deployment gets, pure (Kubernetes' rolling.go,
sync.go's scale and deployment_util.go's arithmetic).

In code order: ``scaled_value`` and ``resolve_fenceposts`` turn maxSurge/maxUnavailable (a
number or a percent of spec.replicas; surge rounds up, unavailable down; both 0 makes
unavailable 1) into numbers, ``max_surge``/``max_unavailable`` read them off a Deployment.
Then a rolling update's two moves: ``new_rs_new_replicas`` (how far the new ReplicaSet may
grow within replicas + maxSurge) and ``old_scale_down`` (which old ReplicaSets shrink, keeping
replicas - maxUnavailable available: unhealthy replicas first, then the oldest sets).
Last, a Deployment resized in the middle of a rollout: ``find_active_or_latest``,
``is_saturated`` and ``proportional_sizes`` (every active ReplicaSet grows or shrinks in
proportion to its size, by the max-replicas annotation it was last scaled with).

The functions read ``ReplicaSetView``s, the few numbers of a ReplicaSet they need, so the
tables of Kubernetes' own tests translate directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .constants import RECREATE, ROLLING_UPDATE

Obj = dict[str, Any]


@dataclass(frozen=True)
class ReplicaSetView:
    """What replica arithmetic reads of one ReplicaSet."""

    name: str
    #: spec.replicas
    replicas: int
    #: Available pods (the controller passes a cautious count: see ``Rollout.view``).
    available: int = 0
    #: Active pods the controller sees (not terminating, not finished); can exceed
    #: ``replicas`` while a scale-down is under way.
    pods: int = 0
    #: creationTimestamp then name: what "older" means.
    created: tuple[str, str] = ("", "")
    #: The deployment.kubernetes.io/desired-replicas and max-replicas annotations.
    desired_annotation: int | None = None
    max_annotation: int | None = None

    @property
    def footprint(self) -> int:
        """Pods this ReplicaSet has or may soon have: its size, or more while extra pods are
        still going."""
        return max(self.replicas, self.pods)


# ---------------------------------------------------------------- maxSurge, maxUnavailable


def scaled_value(value: int | str | None, total: int, *, round_up: bool) -> int:
    """Kubernetes' ``GetScaledValueFromIntOrPercent``: an int as is, "N%" of ``total``
    rounded up or down. Raises ValueError for a string that is not a percent."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise TypeError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%") or not text[:-1].lstrip("-").isdigit():
        raise ValueError(f"invalid value for IntOrString: invalid type: string is not a "
                         f"percentage: {text!r}")
    scaled = int(text[:-1]) * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def resolve_fenceposts(max_surge: int | str | None, max_unavailable: int | str | None,
                       desired: int) -> tuple[int, int]:
    """(surge, unavailable) for ``desired`` replicas; when both come to 0, unavailable is 1
    (validation refuses two zeros, but rounding down can make them)."""
    surge = scaled_value(max_surge, desired, round_up=True)
    unavailable = scaled_value(max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def desired_replicas(deployment: Obj) -> int:
    return int((deployment.get("spec") or {}).get("replicas", 1))


def strategy_type(deployment: Obj) -> str:
    return ((deployment.get("spec") or {}).get("strategy") or {}).get("type") or ROLLING_UPDATE


def _fenceposts(deployment: Obj) -> tuple[int, int]:
    rolling = ((deployment.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    return resolve_fenceposts(rolling.get("maxSurge"), rolling.get("maxUnavailable"),
                              desired_replicas(deployment))


def max_surge(deployment: Obj) -> int:
    """maxSurge as a number; 0 for any strategy but RollingUpdate."""
    if strategy_type(deployment) != ROLLING_UPDATE:
        return 0
    return _fenceposts(deployment)[0]


def max_unavailable(deployment: Obj) -> int:
    """maxUnavailable as a number, at most spec.replicas; 0 for any strategy but
    RollingUpdate, or with no replicas."""
    replicas = desired_replicas(deployment)
    if strategy_type(deployment) != ROLLING_UPDATE or replicas == 0:
        return 0
    return min(_fenceposts(deployment)[1], replicas)


# ---------------------------------------------------------------- a rolling update


def new_rs_new_replicas(strategy: str, *, replicas: int, surge: int, footprint: int,
                        new_replicas: int) -> int:
    """The size the new ReplicaSet may have now (Kubernetes' ``NewRSNewReplicas``).

    RollingUpdate: grow towards ``replicas`` while all ReplicaSets together (``footprint``:
    their sizes, or their live pods where more) stay within ``replicas + surge``.
    Recreate: ``replicas`` at once (the old ones are gone by then)."""
    if strategy == RECREATE:
        return replicas
    if strategy != ROLLING_UPDATE:
        raise ValueError(f"deployment type {strategy} isn't supported")
    most = replicas + surge
    if footprint >= most:
        return new_replicas
    return new_replicas + max(min(most - footprint, replicas - new_replicas), 0)


def old_scale_down(old: list[ReplicaSetView], new: ReplicaSetView | None, *, replicas: int,
                   unavailable: int) -> list[tuple[str, int]]:
    """The old ReplicaSets to shrink and their new sizes, in order (Kubernetes'
    ``reconcileOldReplicaSets``): nothing while the new ReplicaSet's unavailable pods already
    use up maxUnavailable; else first the old sets' unhealthy replicas (unavailable ones, which
    their ReplicaSet deletes first, oldest set first), then available ones from the oldest set
    on, as long as ``replicas - unavailable`` stay available."""
    if sum(rs.replicas for rs in old) == 0:
        return []
    min_available = replicas - unavailable
    new_replicas = new.replicas if new is not None else 0
    new_unavailable = new_replicas - (new.available if new is not None else 0)
    total = sum(rs.replicas for rs in old) + new_replicas
    most_down = total - min_available - new_unavailable
    if most_down <= 0:
        return []
    plan: list[tuple[str, int]] = []
    sizes = {rs.name: rs.replicas for rs in old}
    ordered = sorted(old, key=lambda rs: rs.created)
    cleaned = 0
    for rs in ordered:  # cleanupUnhealthyReplicas
        if cleaned >= most_down:
            break
        unhealthy = sizes[rs.name] - min(rs.available, sizes[rs.name])
        if sizes[rs.name] == 0 or unhealthy <= 0:
            continue
        down = min(most_down - cleaned, unhealthy)
        sizes[rs.name] -= down
        plan.append((rs.name, sizes[rs.name]))
        cleaned += down
    # scaleDownOldReplicaSetsForRollingUpdate: availability as the ReplicaSets report it.
    available = sum(min(rs.available, rs.replicas) for rs in old) + \
        (min(new.available, new.replicas) if new is not None else 0)
    if available > min_available:
        budget = available - min_available
        for rs in ordered:
            if budget <= 0:
                break
            if sizes[rs.name] == 0:
                continue
            down = min(sizes[rs.name], budget)
            sizes[rs.name] -= down
            plan.append((rs.name, sizes[rs.name]))
            budget -= down
    return _last_per_name(plan)


def _last_per_name(plan: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """One step per ReplicaSet (its final size), in the order each was first touched."""
    final = dict(plan)
    seen: list[str] = []
    for name, _ in plan:
        if name not in seen:
            seen.append(name)
    return [(name, final[name]) for name in seen]


# ---------------------------------------------------------------- resized mid-rollout


def find_active_or_latest(new: ReplicaSetView | None,
                          old: list[ReplicaSetView]) -> ReplicaSetView | None:
    """The one ReplicaSet with replicas (or, with none, the new one, else the newest old one);
    None when several have replicas (Kubernetes' ``FindActiveOrLatest``)."""
    if new is None and not old:
        return None
    newest_first = sorted(old, key=lambda rs: rs.created, reverse=True)
    active = [rs for rs in [*newest_first, new] if rs is not None and rs.replicas > 0]
    if not active:
        return new if new is not None else newest_first[0]
    return active[0] if len(active) == 1 else None


def is_saturated(new: ReplicaSetView | None, replicas: int) -> bool:
    """The new ReplicaSet has all the Deployment's replicas, all available, and was sized for
    this very spec.replicas."""
    return new is not None and new.replicas == replicas and \
        new.desired_annotation == replicas and new.available == replicas


def replica_set_fraction(rs: ReplicaSetView, *, replicas: int, surge: int,
                         status_replicas: int) -> int:
    """How much ``rs`` grows (or, negative, shrinks) when the Deployment's maximum size goes
    from what ``rs`` was last scaled for (its max-replicas annotation, else the Deployment's
    status.replicas) to ``replicas + surge``: its share, rounded half away from zero."""
    if replicas == 0:
        return -rs.replicas
    maximum = replicas + surge
    before = rs.max_annotation or status_replicas
    if not before:
        return 0  # no base to scale from: leave it
    share = rs.replicas * maximum / before
    rounded = int(share + 0.5) if share >= 0 else int(share - 0.5)
    return rounded - rs.replicas


def get_proportion(rs: ReplicaSetView, *, to_add: int, added: int, replicas: int, surge: int,
                   status_replicas: int) -> int:
    """``rs``'s part of ``to_add`` replicas, ``added`` of them handed out already: its fraction,
    never beyond what is left (Kubernetes' ``GetProportion``)."""
    if rs.replicas == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = replica_set_fraction(rs, replicas=replicas, surge=surge,
                                    status_replicas=status_replicas)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def proportional_sizes(active: list[ReplicaSetView], *, replicas: int, surge: int,
                       status_replicas: int) -> list[tuple[str, int]]:
    """New sizes of the active ReplicaSets (all with replicas) of a RollingUpdate Deployment
    resized mid-rollout, in the order they are written (Kubernetes' ``scale``): the change
    (``replicas + surge`` minus their sum) is shared in proportion to their sizes, largest first
    (on a tie, newer first when growing, older first when shrinking); what rounding leaves over
    goes to the first."""
    allowed = replicas + surge if replicas > 0 else 0
    to_add = allowed - sum(rs.replicas for rs in active)
    if to_add > 0:
        ordered = sorted(sorted(active, key=lambda rs: rs.created, reverse=True),
                         key=lambda rs: rs.replicas, reverse=True)
    elif to_add < 0:
        ordered = sorted(sorted(active, key=lambda rs: rs.created),
                         key=lambda rs: rs.replicas, reverse=True)
    else:
        ordered = list(active)
    added = 0
    sizes: dict[str, int] = {}
    for rs in ordered:
        if to_add:
            share = get_proportion(rs, to_add=to_add, added=added, replicas=replicas,
                                   surge=surge, status_replicas=status_replicas)
            sizes[rs.name] = rs.replicas + share
            added += share
        else:
            sizes[rs.name] = rs.replicas
    if ordered and to_add:
        first = ordered[0].name
        sizes[first] = max(sizes[first] + to_add - added, 0)
    return [(rs.name, sizes[rs.name]) for rs in ordered]


def scale_plan(new: ReplicaSetView | None, old: list[ReplicaSetView], *, replicas: int,
               surge: int, rolling: bool, status_replicas: int) -> list[tuple[str, int]]:
    """The sizes a resized (or paused) Deployment writes, in order (Kubernetes' ``scale``): the
    one active ReplicaSet (or the newest) gets ``replicas``; next to a saturated new one, the
    old ones go to 0; else, for a rolling update, every active one in proportion."""
    target = find_active_or_latest(new, old)
    if target is not None:
        return [(target.name, replicas)]
    if is_saturated(new, replicas):
        return [(rs.name, 0) for rs in old if rs.replicas > 0]
    if not rolling:
        return []
    active = [rs for rs in [*old, new] if rs is not None and rs.replicas > 0]
    return proportional_sizes(active, replicas=replicas, surge=surge,
                              status_replicas=status_replicas)
