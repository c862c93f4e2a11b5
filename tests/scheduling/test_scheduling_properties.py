"""Properties of the scheduler's decision over generated small clusters: a chosen node passes every
filter and has the best score; without one, every node was rejected and the reasons add up;
the decision changes nothing it is given; NodeInfo's add and remove undo each other; and a
scheduling loop that follows next_start_index spreads identical pods over every node.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.controllers.scheduling import (
    FILTERS,
    NodeInfo,
    PodInfo,
    build_node_infos,
    find_feasible,
    prefilter,
    schedule,
)
from sched_tables import make_nodes, make_pod

ANTI_WEB = {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
    {"labelSelector": {"matchLabels": {"app": "web"}},
     "topologyKey": "topology.kubernetes.io/zone"}]}}}
TOLERATIONS = [{"key": "x", "operator": "Exists"},
               {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
               {"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                "effect": "NoSchedule"},
               {"key": "y", "value": "1", "effect": "PreferNoSchedule"}]

node_specs = st.fixed_dictionaries({
    "cpu": st.sampled_from(["1", "2", "4"]),
    "memory": st.sampled_from(["1Gi", "4Gi"]),
    "pods": st.integers(1, 5),
    "labels": st.fixed_dictionaries({}, optional={
        "disk": st.sampled_from(["ssd", "hdd"]),
        "topology.kubernetes.io/zone": st.sampled_from(["a", "b"])}),
    "taints": st.lists(st.sampled_from(["x=1:NoSchedule", "y=1:PreferNoSchedule",
                                        "y=1:PreferNoSchedule", "z:NoExecute"]),
                       unique=True, max_size=1),
    "unschedulable": st.sampled_from([False, False, False, True]),
    "ready": st.sampled_from(["True"] * 6 + ["False", "Unknown", None]),
})


def pod_specs(node_count: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "cpu": st.sampled_from(["0", "100m", "500m", "1", "3"]),
        "memory": st.sampled_from(["64Mi", "2Gi"]),
        "labels": st.sampled_from([{"app": "web"}, {"app": "db"}]),
        "owner": st.sampled_from(["rs-1", "rs-2"]),
        "host_ports": st.just([80]),
        "node": st.sampled_from([f"n{i}" for i in range(node_count)]),
        "phase": st.sampled_from(["Running", "Succeeded"]),
        "spec": st.fixed_dictionaries({}, optional={
            "affinity": st.just(ANTI_WEB["affinity"]),
            "nodeSelector": st.sampled_from([{"disk": "ssd"}, {"disk": "hdd"}]),
            "tolerations": st.lists(st.sampled_from(TOLERATIONS), unique_by=str, max_size=3),
        }),
    })


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    specs = draw(st.lists(node_specs, min_size=1, max_size=10))
    nodes = make_nodes([{**spec, "name": f"n{i}"} for i, spec in enumerate(specs)])
    existing = draw(st.lists(pod_specs(len(nodes)), max_size=16))
    pods = [make_pod({**spec, "name": f"e{i}"}) for i, spec in enumerate(existing)]
    incoming = draw(pod_specs(len(nodes)))
    incoming.pop("node", None)
    incoming.pop("phase", None)
    return nodes, pods, make_pod({**incoming, "name": "incoming"})


def _fingerprint(infos: list[NodeInfo]) -> list[Any]:
    return [(i.name, sorted(i.pods), i.requested_milli_cpu, i.non_zero_requested_memory,
             dict(i.used_ports), dict(i.owner_counts)) for i in infos]


@settings(max_examples=300, deadline=None)
@given(clusters(), st.randoms(use_true_random=False))
def test_decision_is_consistent_with_the_filters(cluster: Any, rng: random.Random) -> None:
    nodes, pods, pod = cluster
    infos = build_node_infos(nodes, pods)
    before = _fingerprint(infos)
    decision = schedule(pod, infos, tie_break=rng.choice)
    assert _fingerprint(infos) == before  # pure: the snapshot is not changed
    state = prefilter(PodInfo(pod), infos)
    passed, rejected = find_feasible(state, infos, len(infos))
    feasible = [info.name for info in passed]
    assert len(feasible) + len(rejected) == len(infos)
    if decision.node is None:
        assert not feasible
        assert decision.message.startswith(f"0/{len(infos)} nodes are available: ")
        per_node = [len(unfit.reasons) for unfit in rejected.values()]
        assert sum(decision.reasons.values()) == sum(per_node) >= len(infos)
        assert all(0 < count <= len(infos) for count in decision.reasons.values())
        return
    chosen = next(info for info in infos if info.name == decision.node)
    assert all(check(state, chosen) is None for check in FILTERS)
    if len(feasible) > 1:
        assert sorted(decision.scores) == sorted(feasible)
        assert decision.scores[decision.node] == max(decision.scores.values())
    else:
        assert feasible == [decision.node]


@settings(max_examples=200, deadline=None)
@given(clusters(), st.randoms(use_true_random=False))
def test_add_and_remove_undo_each_other(cluster: Any, rng: random.Random) -> None:
    nodes, pods, _ = cluster
    info = NodeInfo(nodes[0])
    empty = _fingerprint([info])
    for pod in pods:
        info.add_pod(pod)
    rng.shuffle(pods)
    assert all(info.remove_pod(pod) for pod in pods)
    assert _fingerprint([info]) == empty
    assert (info.requested_memory, info.requested_ephemeral_storage,
            info.non_zero_requested_milli_cpu, info.used_port_numbers,
            info.pods_with_required_anti_affinity) == (0, 0, 0, {}, {})


def test_following_next_start_index_uses_every_node() -> None:
    """With 200 identical nodes only 100 are scored per pod; rotating the start lets the
    spreading score see them all, so 400 pods of one ReplicaSet land two to a node."""
    nodes = make_nodes([{"name": "n", "count": 200, "cpu": "64", "memory": "64Gi"}])
    infos = build_node_infos(nodes, [])
    start = 0
    for i in range(400):
        info = PodInfo(make_pod({"name": f"p{i}", "owner": "rs-1", "cpu": "10m"}))
        decision = schedule(info, infos, percentage_of_nodes_to_score=50, start_index=start)
        start = decision.next_start_index
        next(n for n in infos if n.name == decision.node).add_pod(info)
    assert sorted({len(n.pods) for n in infos}) == [2]
