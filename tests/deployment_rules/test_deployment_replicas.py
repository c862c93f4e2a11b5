"""Replica arithmetic of the Deployment controller against Kubernetes' own test tables
(deployment_util_test.go TestResolveFenceposts, TestNewRSNewReplicas; rolling_test.go
reconcileNewReplicaSet/reconcileOldReplicaSets/cleanupUnhealthyReplicas; sync_test.go
TestScale), plus the cases our cautious counts add."""

from __future__ import annotations

import pytest

from controlplane.controllers.deployment.replicas import (
    ReplicaSetView,
    find_active_or_latest,
    is_saturated,
    max_surge,
    max_unavailable,
    new_rs_new_replicas,
    old_scale_down,
    resolve_fenceposts,
    scale_plan,
    scaled_value,
)

NEWER, OLD, OLDER = ("2016-05-20T02:00:00Z", ""), ("2016-05-20T01:00:00Z", ""), \
    ("2016-05-20T00:00:00Z", "")


@pytest.mark.parametrize("surge, unavailable, desired, expect", [
    ("0%", "0%", 0, (0, 1)),
    ("39%", "39%", 10, (4, 3)),  # surge rounds up, unavailable down
    (None, "39%", 10, (0, 3)),
    ("39%", None, 10, (4, 0)),
    (None, None, 10, (0, 1)),
    ("25%", "25%", 10, (3, 2)),  # the apps/v1 defaults on 10 replicas
    ("25%", "25%", 1, (1, 0)),
    (0, "10%", 5, (0, 1)),  # both 0 after rounding: unavailable 1
    (3, 2, 10, (3, 2)),
    ("100%", "100%", 7, (7, 7)),
])
def test_resolve_fenceposts(surge: object, unavailable: object, desired: int,
                            expect: tuple[int, int]) -> None:
    assert resolve_fenceposts(surge, unavailable, desired) == expect


@pytest.mark.parametrize("surge, unavailable", [("oops", "39%"), ("55%", "urg")])
def test_resolve_fenceposts_refuses_non_percent_strings(surge: str, unavailable: str) -> None:
    with pytest.raises(ValueError):
        resolve_fenceposts(surge, unavailable, 10)


def test_scaled_value_rounding() -> None:
    assert scaled_value("33%", 10, round_up=True) == 4
    assert scaled_value("33%", 10, round_up=False) == 3
    assert scaled_value(5, 10, round_up=False) == 5


def deployment(replicas: int, surge: object = "25%", unavailable: object = "25%",
               strategy: str = "RollingUpdate") -> dict:
    spec: dict = {"replicas": replicas, "strategy": {"type": strategy}}
    if strategy == "RollingUpdate":
        spec["strategy"]["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    return {"metadata": {"name": "d"}, "spec": spec}


def test_max_surge_and_unavailable_of_a_deployment() -> None:
    assert (max_surge(deployment(10)), max_unavailable(deployment(10))) == (3, 2)
    assert (max_surge(deployment(3, 0, 5)), max_unavailable(deployment(3, 0, 5))) == (0, 3)
    assert max_unavailable(deployment(0)) == 0
    assert (max_surge(deployment(10, strategy="Recreate")),
            max_unavailable(deployment(10, strategy="Recreate"))) == (0, 0)


# name, strategy, deployment replicas, new RS replicas, surge, old RS sizes, expected
NEW_RS_NEW_REPLICAS = [
    ("can not scale up - to newRSReplicas", "RollingUpdate", 1, 5, 1, [5], 5),
    ("scale up - to depReplicas", "RollingUpdate", 6, 2, 10, [4], 6),
    ("recreate - to depReplicas", "Recreate", 3, 1, 1, [1], 3),
    # rolling.go reconcileNewReplicaSet table (old sizes, surge)
    ("no surge, no room", "RollingUpdate", 10, 0, 0, [10], 0),
    ("surge 2 from nothing", "RollingUpdate", 10, 0, 2, [10], 2),
    ("surge 2 with half the old gone", "RollingUpdate", 10, 0, 2, [5], 7),
    ("surge used up", "RollingUpdate", 10, 2, 2, [10], 2),
]


@pytest.mark.parametrize("name, strategy, replicas, new, surge, old, expect", NEW_RS_NEW_REPLICAS,
                         ids=[case[0] for case in NEW_RS_NEW_REPLICAS])
def test_new_rs_new_replicas(name: str, strategy: str, replicas: int, new: int, surge: int,
                             old: list[int], expect: int) -> None:
    assert new_rs_new_replicas(strategy, replicas=replicas, surge=surge,
                               footprint=sum(old) + new, new_replicas=new) == expect


def test_new_rs_room_counts_live_pods_beyond_a_size() -> None:
    """An old ReplicaSet scaled to 6 whose 8 pods are still up holds 8 places."""
    old = ReplicaSetView("old", replicas=6, pods=8)
    new = ReplicaSetView("new", replicas=4, pods=4)
    assert new_rs_new_replicas("RollingUpdate", replicas=10, surge=2,
                               footprint=old.footprint + new.footprint, new_replicas=4) == 4
    old = ReplicaSetView("old", replicas=6, pods=6)
    assert new_rs_new_replicas("RollingUpdate", replicas=10, surge=2,
                               footprint=old.footprint + new.footprint, new_replicas=4) == 6


def test_new_rs_new_replicas_refuses_unknown_strategies() -> None:
    with pytest.raises(ValueError):
        new_rs_new_replicas("BlueGreen", replicas=1, surge=0, footprint=0, new_replicas=0)


# replicas, maxUnavailable, old size, new size, old available, new available -> plan
OLD_SCALE_DOWN = [
    ("unavailable 0 resolves to 1", 10, 1, 10, 0, 10, 0, [("old", 9)]),
    ("maxUnavailable 2", 10, 2, 10, 0, 10, 0, [("old", 8)]),
    ("unhealthy cleaned up first", 10, 2, 10, 0, 8, 0, [("old", 8)]),
    ("one unhealthy, one available", 10, 2, 10, 0, 9, 0, [("old", 8)]),
    ("new pods unavailable use the budget", 10, 2, 8, 2, 8, 0, []),
    ("new pods available free old ones", 10, 2, 8, 2, 8, 2, [("old", 6)]),
    ("too few available to shrink", 10, 2, 10, 0, 1, 0, [("old", 8)]),
    ("nothing old left", 10, 2, 0, 10, 0, 10, []),
    ("minimum kept exactly", 10, 2, 10, 3, 10, 0, [("old", 8)]),
]


@pytest.mark.parametrize("name, replicas, unavailable, old, new, old_avail, new_avail, expect",
                         OLD_SCALE_DOWN, ids=[case[0] for case in OLD_SCALE_DOWN])
def test_old_scale_down(name: str, replicas: int, unavailable: int, old: int, new: int,
                        old_avail: int, new_avail: int, expect: list) -> None:
    plan = old_scale_down([ReplicaSetView("old", old, available=old_avail, created=OLD)],
                          ReplicaSetView("new", new, available=new_avail, created=NEWER),
                          replicas=replicas, unavailable=unavailable)
    assert plan == expect


@pytest.mark.parametrize("ready, most, expect", [
    # cleanupUnhealthyReplicas' table: an old set of 10 with ``ready`` available, at most
    # ``most`` to go (maxUnavailable, the new set empty); unhealthy replicas go first, then
    # available ones while replicas - maxUnavailable stay.
    (8, 1, [("old", 9)]),  # one of the two unhealthy
    (8, 3, [("old", 7)]),  # both unhealthy, then one available
    (8, 0, []),
    (10, 3, [("old", 7)]),  # none unhealthy
])
def test_unhealthy_replicas_go_first(ready: int, most: int, expect: list) -> None:
    assert old_scale_down([ReplicaSetView("old", 10, available=ready, created=OLD)], None,
                          replicas=10, unavailable=most) == expect


def test_old_sets_shrink_oldest_first() -> None:
    old = [ReplicaSetView("v2", 3, available=3, created=OLD),
           ReplicaSetView("v1", 3, available=3, created=OLDER)]
    plan = old_scale_down(old, ReplicaSetView("v3", 4, available=4, created=NEWER),
                          replicas=8, unavailable=2)
    # available 10, minimum 6: 4 may go, v1 (older) first, then one of v2
    assert plan == [("v1", 0), ("v2", 2)]


def test_available_above_size_is_not_trusted() -> None:
    """A status still counting pods of a set just shrunk must not shrink it twice."""
    old = [ReplicaSetView("old", 5, available=10, created=OLD)]
    plan = old_scale_down(old, ReplicaSetView("new", 8, available=4, created=NEWER),
                          replicas=10, unavailable=2)
    # counted: 5 (not 10) + 4 = 9 available, 8 must stay: one more may go
    assert plan == [("old", 4)]


def view(name: str, replicas: int, created: tuple[str, str], *, desired: int,
         maximum: int, available: int | None = None) -> ReplicaSetView:
    return ReplicaSetView(name, replicas, available=replicas if available is None else available,
                          created=created, desired_annotation=desired, max_annotation=maximum)


# name, (replicas, surge) now, (replicas, surge) before, new RS or None, old RSs,
# expected sizes {name: size}
SCALE = [
    ("normal scaling event: 10 -> 12", (12, 0), (10, 0), ("foo-v1", 10), [],
     {"foo-v1": 12}),
    ("normal scaling event: 10 -> 5", (5, 0), (10, 0), ("foo-v1", 10), [], {"foo-v1": 5}),
    ("proportional scaling: 5 -> 10", (10, 0), (5, 0), ("foo-v2", 2), [("foo-v1", 3)],
     {"foo-v2": 4, "foo-v1": 6}),
    ("proportional scaling: 5 -> 3", (3, 0), (5, 0), ("foo-v2", 2), [("foo-v1", 3)],
     {"foo-v2": 1, "foo-v1": 2}),
    ("proportional scaling: 9 -> 4", (4, 0), (9, 0), ("foo-v2", 8), [("foo-v1", 1)],
     {"foo-v2": 4, "foo-v1": 0}),
    ("proportional scaling: 7 -> 10", (10, 0), (7, 0), ("foo-v3", 2),
     [("foo-v2", 3), ("foo-v1", 2)], {"foo-v3": 3, "foo-v2": 4, "foo-v1": 3}),
    ("proportional scaling: 13 -> 8", (8, 0), (13, 0), ("foo-v3", 2),
     [("foo-v2", 8), ("foo-v1", 3)], {"foo-v3": 1, "foo-v2": 5, "foo-v1": 2}),
    ("leftover distribution: 3 -> 4", (4, 0), (3, 0), ("foo-v3", 1),
     [("foo-v2", 1), ("foo-v1", 1)], {"foo-v3": 2, "foo-v2": 1, "foo-v1": 1}),
    ("leftover distribution: 3 -> 2", (2, 0), (3, 0), ("foo-v3", 1),
     [("foo-v2", 1), ("foo-v1", 1)], {"foo-v3": 1, "foo-v2": 1, "foo-v1": 0}),
    ("proportional scaling (no new rs): 4 -> 5", (5, 0), (4, 0), None,
     [("foo-v2", 2), ("foo-v1", 2)], {"foo-v2": 3, "foo-v1": 2}),
    ("proportional scaling: 6 -> 0", (0, 0), (6, 0), ("foo-v3", 3),
     [("foo-v2", 2), ("foo-v1", 1)], {"foo-v3": 0, "foo-v2": 0, "foo-v1": 0}),
    ("proportional scaling: 0 -> 6", (6, 0), (6, 0), ("foo-v3", 0),
     [("foo-v2", 0), ("foo-v1", 0)], {"foo-v3": 6, "foo-v2": 0, "foo-v1": 0}),
    ("deployment with surge pods", (20, 2), (10, 2), ("foo-v2", 6), [("foo-v1", 6)],
     {"foo-v2": 11, "foo-v1": 11}),
    ("change both surge and size", (50, 6), (10, 3), ("foo-v2", 5), [("foo-v1", 8)],
     {"foo-v2": 22, "foo-v1": 34}),
    ("change both size and template", (14, 0), (10, 0), None,
     [("foo-v2", 7), ("foo-v1", 3)], {"foo-v2": 10, "foo-v1": 4}),
]
_CREATED = {"foo-v3": NEWER, "foo-v2": OLD, "foo-v1": OLDER}


@pytest.mark.parametrize("name, now, before, new, old, expect", SCALE,
                         ids=[case[0] for case in SCALE])
def test_scale(name: str, now: tuple[int, int], before: tuple[int, int],
               new: tuple[str, int] | None, old: list[tuple[str, int]],
               expect: dict[str, int]) -> None:
    desired, maximum = before[0], before[0] + before[1]
    created = dict(_CREATED)
    if name == "change both size and template":
        created = {"foo-v2": NEWER, "foo-v1": OLD}
    elif new is not None and new[0] == "foo-v2":
        created["foo-v2"] = NEWER
        created["foo-v1"] = OLD
    new_view = None if new is None else view(new[0], new[1], created[new[0]], desired=desired,
                                             maximum=maximum)
    old_views = [view(n, size, created[n], desired=desired, maximum=maximum) for n, size in old]
    plan = scale_plan(new_view, old_views, replicas=now[0], surge=now[1], rolling=True,
                      status_replicas=sum(size for _, size in old) + (new[1] if new else 0))
    sizes = {v.name: v.replicas for v in [*old_views, *([new_view] if new_view else [])]}
    sizes.update(dict(plan))
    assert sizes == expect


def test_saturated_but_broken_new_replica_set_leaves_old_pods() -> None:
    new = view("foo-v2", 2, NEWER, desired=2, maximum=3, available=0)
    old = [view("foo-v1", 1, OLD, desired=2, maximum=3)]
    assert not is_saturated(new, 2)
    plan = dict(scale_plan(new, old, replicas=2, surge=1, rolling=True, status_replicas=3))
    assert plan == {"foo-v2": 2, "foo-v1": 1}


def test_saturated_new_replica_set_scales_old_ones_to_zero() -> None:
    new = view("foo-v2", 5, NEWER, desired=5, maximum=6)
    old = [view("foo-v1", 2, OLD, desired=5, maximum=6)]
    assert scale_plan(new, old, replicas=5, surge=1, rolling=True, status_replicas=7) == \
        [("foo-v1", 0)]


def test_active_or_latest() -> None:
    v1 = ReplicaSetView("v1", 0, created=OLDER)
    v2 = ReplicaSetView("v2", 0, created=OLD)
    assert find_active_or_latest(None, [v1, v2]) == v2  # none active: the newest
    assert find_active_or_latest(ReplicaSetView("v3", 0, created=NEWER), [v1, v2]).name == "v3"
    busy = ReplicaSetView("v1", 2, created=OLDER)
    assert find_active_or_latest(ReplicaSetView("v3", 0), [busy, v2]) == busy
    assert find_active_or_latest(ReplicaSetView("v3", 1), [busy, v2]) is None
    assert find_active_or_latest(None, []) is None


def test_recreate_is_not_scaled_proportionally() -> None:
    new = view("v2", 2, NEWER, desired=4, maximum=4)
    old = [view("v1", 2, OLD, desired=4, maximum=4)]
    assert scale_plan(new, old, replicas=8, surge=0, rolling=False, status_replicas=4) == []
