"""The Score plugins of kube-scheduler's default profile that Corral runs, with their weights.

Flow: ``default_normalize_score`` (helper.DefaultNormalizeScore: scale so the best is 100,
optionally reversed), then one function a plugin — TaintToleration (fewer intolerable
PreferNoSchedule taints is better), NodeAffinity (sum of matching preferred terms' weights),
NodeResourcesFit with the LeastAllocated strategy (more free cpu and memory is better, counting
missing requests as 100m and 200Mi), PodTopologySpread with the system default constraints (fewer
pods of the same owner on the node and in its zone is better) — and ``SCORE_PLUGINS`` pairing each
with its default weight.

Each takes the CycleState and the feasible nodes and returns one normalised 0..100 score a node,
or None when the plugin skips the pod (PreScore's Skip: it adds nothing to any node). Integer
arithmetic truncates as Go's int64 division does, so totals match kube-scheduler's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .constants import (
    LABEL_TOPOLOGY_ZONE,
    MAX_NODE_SCORE,
    NODE_AFFINITY_WEIGHT,
    NODE_RESOURCES_FIT_WEIGHT,
    POD_TOPOLOGY_SPREAD_WEIGHT,
    SYSTEM_DEFAULT_CONSTRAINTS,
    TAINT_TOLERATION_WEIGHT,
)
from .filters import CycleState, tolerates
from .nodeinfo import NodeInfo

Scorer = Callable[[CycleState, Sequence[NodeInfo]], "list[int] | None"]


def default_normalize_score(scores: list[int], *, reverse: bool) -> list[int]:
    """Scale to 0..MAX_NODE_SCORE against the highest score; reversed, fewest is best. All zero
    stays zero (or becomes MAX_NODE_SCORE when reversed)."""
    highest = max(scores, default=0)
    if highest == 0:
        return [MAX_NODE_SCORE if reverse else 0] * len(scores)
    scaled = [MAX_NODE_SCORE * s // highest for s in scores]
    return [MAX_NODE_SCORE - s for s in scaled] if reverse else scaled


def taint_toleration(state: CycleState, nodes: Sequence[NodeInfo]) -> list[int]:
    """PreferNoSchedule taints the pod does not tolerate (tolerations with that effect or none)."""
    tolerations = state.prefer_no_schedule_tolerations
    counts = [sum(1 for key, value, effect in node.prefer_no_schedule_taints
                  if not tolerates(tolerations, key, value, effect))
              if node.prefer_no_schedule_taints else 0 for node in nodes]
    return default_normalize_score(counts, reverse=True)


def node_affinity(state: CycleState, nodes: Sequence[NodeInfo]) -> list[int] | None:
    """The summed weights of the preferred node affinity terms each node matches."""
    terms = state.preferred_node_affinity
    if not terms:
        return None
    sums = [sum(weight for weight, matches in terms if matches(node)) for node in nodes]
    return default_normalize_score(sums, reverse=False)


def node_resources_fit(state: CycleState, nodes: Sequence[NodeInfo]) -> list[int]:
    """LeastAllocated over cpu and memory, weight 1 each: the free share of each after placing
    the pod, 0..MAX_NODE_SCORE, 0 when over-committed or when the node has none of it; a
    resource the node has none of is left out of the average."""
    cpu, memory = state.pod.non_zero_milli_cpu, state.pod.non_zero_memory
    scores = []
    for node in nodes:  # inline: this runs for every feasible node of every pod
        cpu_cap, memory_cap = node.allocatable_milli_cpu, node.allocatable_memory
        cpu_req = node.non_zero_requested_milli_cpu + cpu
        memory_req = node.non_zero_requested_memory + memory
        total = ((cpu_cap - cpu_req) * MAX_NODE_SCORE // cpu_cap
                 if cpu_cap != 0 and cpu_req <= cpu_cap else 0)
        total += ((memory_cap - memory_req) * MAX_NODE_SCORE // memory_cap
                  if memory_cap != 0 and memory_req <= memory_cap else 0)
        scores.append(total // ((cpu_cap > 0) + (memory_cap > 0) or 1))
    return scores


def pod_topology_spread(state: CycleState, nodes: Sequence[NodeInfo]) -> list[int] | None:
    """The system default soft constraints (hostname maxSkew 3, zone maxSkew 5), counting the
    pods that share the pod's controller (not terminating). Each domain the node is in adds
    count * log(domains + 2) + maxSkew - 1, rounded half up; zones count pods on all nodes that
    satisfy the pod's required node affinity (nodeAffinityPolicy Honor), in the zones (or the
    no-zone "" domain) of the feasible nodes. Lower raw is better after normalising."""
    uid = state.pod.controller_uid
    if uid is None:
        return None
    (_, host_skew), (_, zone_skew) = SYSTEM_DEFAULT_CONSTRAINTS
    owned = [node.owner_counts.get(uid, 0) for node in nodes]
    zones = [node.labels.get(LABEL_TOPOLOGY_ZONE) for node in nodes]
    zone_counts = dict.fromkeys(("" if zone is None else zone for zone in zones), 0)
    affinity = state.node_affinity
    for node in state.all_nodes:
        count = node.owner_counts.get(uid)
        if count:
            zone = node.labels.get(LABEL_TOPOLOGY_ZONE, "")
            if zone in zone_counts and (affinity is None or affinity(node)):
                zone_counts[zone] += count
    host_weight = math.log(len(nodes) + 2)
    zone_weight = math.log(len(zone_counts) + 2)
    # Every NodeInfo has the hostname label, so the hostname domain always counts.
    raw = [math.floor(count * host_weight + host_skew - 1 + 0.5 + (
        0 if zone is None else zone_counts[zone] * zone_weight + zone_skew - 1))
        for count, zone in zip(owned, zones)]
    lowest, highest = min(raw), max(raw)
    if highest == 0:
        return [MAX_NODE_SCORE] * len(raw)
    return [MAX_NODE_SCORE * (highest + lowest - s) // highest for s in raw]


#: (weight, plugin) in kube-scheduler's plugin order.
SCORE_PLUGINS: tuple[tuple[int, Scorer], ...] = (
    (TAINT_TOLERATION_WEIGHT, taint_toleration),
    (NODE_AFFINITY_WEIGHT, node_affinity),
    (NODE_RESOURCES_FIT_WEIGHT, node_resources_fit),
    (POD_TOPOLOGY_SPREAD_WEIGHT, pod_topology_spread),
)
