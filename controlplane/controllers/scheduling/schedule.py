"""One scheduling decision, kube-scheduler's schedulePod as a pure function: a Pod and a snapshot
of NodeInfos in, a ``Decision`` out. No I/O, no clock; the random tie-break is injected.

Flow: ``num_feasible_nodes_to_find`` (percentageOfNodesToScore), ``Decision``, the FitError and
preemption messages, ``select_host``, then ``schedule``: PreFilter, Filter over the nodes from a
rotating start index until enough feasible nodes are found (the caller keeps
``Decision.next_start_index`` for the next pod, as kube-scheduler keeps nextStartNodeIndex), and
either the FitError message when none fits or the weighted sum of the Score plugins (skipped
when a single node is left) and the best node.

Simplified against kube-scheduler (v1.31-v1.33 behaviour, DynamicResourceAllocation off):
- Corral does not preempt. The message's "preemption:" sentence is what DefaultPreemption prints
  when no node has pods of lower priority than the incoming one (true while Corral has no
  PriorityClasses): "No preemption victims found for incoming pod" for nodes that failed a
  resolvable filter, "Preemption is not helpful for scheduling" for the others.
- Untolerated taints name the taint ({key: value}); see constants.py.
- Spreading uses the system default constraints with "same controller ownerReference uid" as the
  selector, where kube-scheduler derives selectors from the Services, ReplicaSets and StatefulSets
  that select the pod; a pod's own topologySpreadConstraints are not read yet.
- Not run: NodeResourcesBalancedAllocation, ImageLocality and InterPodAffinity scoring
  (preferred pod affinity), volume plugins, extended resources, and namespaceSelector in
  pod affinity terms (other than the empty one, which means all namespaces).
- Filters run one node after another rather than in 16 goroutines, so which nodes are
  evaluated is deterministic: start index, then in order, until the cap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

from .constants import (
    ADAPTIVE_BASE_PERCENTAGE,
    ADAPTIVE_NODES_PER_PERCENT,
    DEFAULT_PERCENTAGE_OF_NODES_TO_SCORE,
    ERR_NO_NODES_AVAILABLE,
    MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND,
    MIN_FEASIBLE_NODES_TO_FIND,
    NO_NODE_AVAILABLE_MSG,
    PREEMPT_NEVER,
    PREEMPTION_NO_VICTIMS,
    PREEMPTION_NOT_HELPFUL,
    PREEMPTION_POLICY_NEVER,
    PREEMPTION_PREFIX,
    SCHEDULED_MSG,
)
from .filters import Unfit, find_feasible, prefilter
from .nodeinfo import NodeInfo
from .podinfo import Pod, PodInfo
from .scores import SCORE_PLUGINS

TieBreak = Callable[[list[str]], str]


def num_feasible_nodes_to_find(percentage_of_nodes_to_score: int, num_all_nodes: int) -> int:
    """How many feasible nodes are enough: all of a small cluster, else the percentage (adaptive
    when 0: 50% less a percent per 125 nodes, at least 5%), never fewer than 100."""
    if not 0 <= percentage_of_nodes_to_score <= 100:
        raise ValueError(f"percentageOfNodesToScore must be in [0, 100], "
                         f"got {percentage_of_nodes_to_score}")
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    percentage = percentage_of_nodes_to_score
    if percentage == 0:
        percentage = max(ADAPTIVE_BASE_PERCENTAGE - num_all_nodes // ADAPTIVE_NODES_PER_PERCENT,
                         MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


@dataclass(frozen=True)
class Decision:
    """The outcome for one pod. ``reasons`` counts, for each filter reason, the nodes that gave
    it (a node short of cpu and memory gives two); ``scores`` is each scored node's weighted
    total (empty when filtering left one node or none); ``message`` is the event text."""

    node: str | None
    reasons: dict[str, int] = field(default_factory=dict)
    message: str = ""
    scores: dict[str, int] = field(default_factory=dict)
    next_start_index: int = 0


def fit_error_message(num_all_nodes: int, reasons: dict[str, int], post_filter: str = "") -> str:
    """FitError.Error(): "0/N nodes are available: " then "count reason" strings sorted as
    strings (so "10 ..." sorts before "2 ..."), joined by ", ", a period, then the PostFilter
    message."""
    message = NO_NODE_AVAILABLE_MSG.format(nodes=num_all_nodes) + ":"
    histogram = sorted(f"{count} {reason}" for reason, count in reasons.items())
    if histogram:
        message += f" {', '.join(histogram)}."
    if post_filter:
        message += f" {post_filter}"
    return message


def preemption_message(pod: PodInfo, statuses: Iterable[Unfit], num_all_nodes: int) -> str:
    """DefaultPreemption's PostFilter message when it finds no candidate (see module docstring)."""
    if pod.preemption_policy == PREEMPT_NEVER:
        return PREEMPTION_PREFIX + PREEMPTION_POLICY_NEVER
    per_node = Counter(PREEMPTION_NO_VICTIMS if unfit.resolvable else PREEMPTION_NOT_HELPFUL
                       for unfit in statuses)
    return PREEMPTION_PREFIX + fit_error_message(num_all_nodes, dict(per_node))


def select_host(names: Sequence[str], totals: Sequence[int], tie_break: TieBreak | None) -> str:
    """The best total; among equals, ``tie_break`` (given their names sorted) or the lowest name.
    kube-scheduler picks uniformly at random: inject ``random.choice`` to get that."""
    best = max(totals)
    tied = sorted(name for name, total in zip(names, totals) if total == best)
    if len(tied) == 1 or tie_break is None:
        return tied[0]
    return tie_break(tied)


def schedule(pod: Pod | PodInfo, node_infos: Sequence[NodeInfo], *,
             tie_break: TieBreak | None = None,
             percentage_of_nodes_to_score: int = DEFAULT_PERCENTAGE_OF_NODES_TO_SCORE,
             start_index: int = 0) -> Decision:
    """Choose a node for ``pod`` among ``node_infos`` (which this does not change: add the pod to
    the chosen NodeInfo once it is bound). Filtering starts at ``start_index`` (mod the node count)
    and stops once enough feasible nodes are found; pass the returned ``next_start_index`` to the
    next call so that, as in kube-scheduler, every node gets its turn."""
    info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
    num_all = len(node_infos)
    if num_all == 0:
        return Decision(None, message=ERR_NO_NODES_AVAILABLE)
    state = prefilter(info, node_infos)
    wanted = num_feasible_nodes_to_find(percentage_of_nodes_to_score, num_all)
    start = start_index % num_all
    feasible, rejected = find_feasible(state, chain(node_infos[start:], node_infos[:start]),
                                       wanted)
    next_start = (start + len(feasible) + len(rejected)) % num_all
    if not feasible:
        statuses = rejected.values()
        reasons = dict(Counter(reason for unfit in statuses for reason in unfit.reasons))
        message = fit_error_message(num_all, reasons,
                                    preemption_message(info, statuses, num_all))
        return Decision(None, reasons, message, next_start_index=next_start)
    scores: dict[str, int] = {}
    if len(feasible) == 1:
        chosen = feasible[0].name
    else:
        totals = [0] * len(feasible)
        for weight, plugin in SCORE_PLUGINS:
            plugin_scores = plugin(state, feasible)
            if plugin_scores is not None:
                totals = [t + weight * s for t, s in zip(totals, plugin_scores)]
        names = [node.name for node in feasible]
        scores = dict(zip(names, totals))
        chosen = select_host(names, totals, tie_break)
    message = SCHEDULED_MSG.format(namespace=info.namespace, name=info.name, node=chosen)
    return Decision(chosen, {}, message, scores, next_start)
