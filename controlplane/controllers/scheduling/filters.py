"""The Filter plugins of kube-scheduler's default profile, in its order, and the per-pod state
they share.

Flow: ``Unfit`` (a rejection: kube-scheduler's reasons, and whether evicting pods could ever
help, its Unschedulable vs UnschedulableAndUnresolvable), toleration matching, node selector
terms compiled to predicates (nodeSelector, required and preferred node affinity), ``CycleState``
built by ``prefilter`` once per pod (parsed tolerations, affinity predicates, the topology domains
that inter-pod (anti-)affinity blocks or needs, and the filters that can reject this pod at all),
then the filters in kube-scheduler's order — NodeUnschedulable, NodeName, TaintToleration,
NodeAffinity, NodePorts, NodeResourcesFit, InterPodAffinity — and ``find_feasible``, which runs
them over the nodes, each until its first rejection, as the framework does.

Each filter takes the CycleState and a NodeInfo and returns None when the pod fits, else an Unfit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from .constants import (
    ERR_REASON_AFFINITY_RULES,
    ERR_REASON_ANTI_AFFINITY_RULES,
    ERR_REASON_EXISTING_ANTI_AFFINITY_RULES,
    ERR_REASON_INSUFFICIENT,
    ERR_REASON_NODE_AFFINITY,
    ERR_REASON_NODE_NAME,
    ERR_REASON_NODE_PORTS,
    ERR_REASON_TOO_MANY_PODS,
    ERR_REASON_UNSCHEDULABLE,
    ERR_REASON_UNTOLERATED_TAINT,
    NO_SCHEDULE,
    PREFER_NO_SCHEDULE,
    TAINT_NODE_UNSCHEDULABLE,
)
from .nodeinfo import NodeInfo
from .podinfo import AffinityTerm, LabelPair, PodInfo

Toleration = tuple[str, str, str, str]  # (key, operator, value, effect)
NodePredicate = Callable[[NodeInfo], bool]
TopologyPair = tuple[str, str]  # (node label key, value): one topology domain


class Unfit(NamedTuple):
    """Why a node cannot take the pod. ``resolvable`` is False for kube-scheduler's
    UnschedulableAndUnresolvable: preemption could not change the answer."""

    reasons: tuple[str, ...]
    resolvable: bool


UNSCHEDULABLE = Unfit((ERR_REASON_UNSCHEDULABLE,), False)
NODE_NAME = Unfit((ERR_REASON_NODE_NAME,), False)
NODE_AFFINITY = Unfit((ERR_REASON_NODE_AFFINITY,), False)
NODE_PORTS = Unfit((ERR_REASON_NODE_PORTS,), True)
AFFINITY_RULES = Unfit((ERR_REASON_AFFINITY_RULES,), False)
ANTI_AFFINITY_RULES = Unfit((ERR_REASON_ANTI_AFFINITY_RULES,), True)
EXISTING_ANTI_AFFINITY_RULES = Unfit((ERR_REASON_EXISTING_ANTI_AFFINITY_RULES,), True)

# ------------------------------------------------------------------ tolerations


def parse_tolerations(spec: dict[str, Any]) -> tuple[Toleration, ...]:
    return tuple((t.get("key") or "", t.get("operator") or "", t.get("value") or "",
                  t.get("effect") or "") for t in spec.get("tolerations") or ())


def tolerates(tolerations: Sequence[Toleration], key: str, value: str, effect: str) -> bool:
    """Toleration.ToleratesTaint for any of them: an empty effect or key is a wildcard; Exists
    ignores the value, Equal (or no operator) compares it."""
    for t_key, operator, t_value, t_effect in tolerations:
        if (t_effect and t_effect != effect) or (t_key and t_key != key):
            continue
        if operator == "Exists" or (operator in ("", "Equal") and t_value == value):
            return True
    return False


# ------------------------------------------------------------------ node selector terms

_INTEGER = re.compile(r"[-+]?[0-9]+")


def _never(node: NodeInfo) -> bool:
    return False


def _label_requirement(expr: dict[str, Any]) -> NodePredicate | None:
    """One matchExpressions entry (NodeSelectorRequirementsAsSelector); None when invalid."""
    key, operator, values = expr.get("key") or "", expr.get("operator"), expr.get("values") or []
    if operator in ("In", "NotIn"):
        if not values:
            return None
        allowed = frozenset(values)
        if operator == "In":
            return lambda node: node.labels.get(key) in allowed
        return lambda node: node.labels.get(key) not in allowed
    if operator == "Exists" and not values:
        return lambda node: key in node.labels
    if operator == "DoesNotExist" and not values:
        return lambda node: key not in node.labels
    if operator in ("Gt", "Lt") and len(values) == 1 and _INTEGER.fullmatch(values[0]):
        bound = int(values[0])

        def compare(node: NodeInfo) -> bool:
            value = node.labels.get(key)
            if value is None or not _INTEGER.fullmatch(value):
                return False
            return int(value) > bound if operator == "Gt" else int(value) < bound
        return compare
    return None


def _field_requirement(expr: dict[str, Any]) -> NodePredicate | None:
    """One matchFields entry: only metadata.name with In or NotIn and a single value exists."""
    values = expr.get("values") or []
    if expr.get("key") != "metadata.name" or len(values) != 1:
        return None
    name = values[0]
    if expr.get("operator") == "In":
        return lambda node: node.name == name
    if expr.get("operator") == "NotIn":
        return lambda node: node.name != name
    return None


def compile_term(term: dict[str, Any] | None) -> NodePredicate:
    """A NodeSelectorTerm: all of its requirements hold. An empty or invalid term matches no
    node."""
    checks = []
    for expr in (term or {}).get("matchExpressions") or ():
        checks.append(_label_requirement(expr))
    for expr in (term or {}).get("matchFields") or ():
        checks.append(_field_requirement(expr))
    if not checks or None in checks:
        return _never
    if len(checks) == 1:
        return checks[0]  # type: ignore[return-value]
    return lambda node: all(check(node) for check in checks)  # type: ignore[misc]


def required_node_affinity(spec: dict[str, Any]) -> NodePredicate | None:
    """nodeSelector and required node affinity (any of its terms), or None when the pod has
    neither: GetRequiredNodeAffinity."""
    selector = dict(spec.get("nodeSelector") or {})
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if not selector and required is None:
        return None
    terms = [compile_term(t) for t in (required or {}).get("nodeSelectorTerms") or ()]

    def matches(node: NodeInfo) -> bool:
        labels = node.labels
        for key, value in selector.items():
            if labels.get(key) != value:
                return False
        return required is None or any(term(node) for term in terms)
    return matches


def preferred_node_affinity(spec: dict[str, Any]) -> tuple[tuple[int, NodePredicate], ...]:
    """(weight, predicate) of each preferred term with a non-zero weight."""
    preferred = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution") or ()
    return tuple((t.get("weight") or 0, compile_term(t.get("preference")))
                 for t in preferred if t.get("weight"))


# ------------------------------------------------------------------ per-pod state (PreFilter)


class CycleState:
    """What PreFilter and PreScore compute once per pod and every node check reads."""

    __slots__ = ("pod", "all_nodes", "tolerations", "prefer_no_schedule_tolerations",
                 "node_name", "node_affinity", "preferred_node_affinity", "affinity_pairs",
                 "anti_affinity_pairs", "existing_anti_affinity_pairs", "affinity_self_match",
                 "filters")

    def __init__(self, pod: PodInfo, all_nodes: Sequence[NodeInfo]):
        spec = pod.spec
        self.pod = pod
        self.all_nodes = all_nodes
        self.tolerations = parse_tolerations(spec)
        self.prefer_no_schedule_tolerations = tuple(
            t for t in self.tolerations if t[3] in ("", PREFER_NO_SCHEDULE))
        self.node_name: str = spec.get("nodeName") or ""
        self.node_affinity = required_node_affinity(spec)
        self.preferred_node_affinity = preferred_node_affinity(spec)
        self.affinity_pairs: set[TopologyPair] = set()
        self.anti_affinity_pairs: set[TopologyPair] = set()
        self.existing_anti_affinity_pairs: set[TopologyPair] = set()
        self.affinity_self_match = bool(pod.required_affinity) and all(
            term.matches(pod) for term in pod.required_affinity)
        self.filters: tuple[Filter, ...] = ()


def _may_hold(term: AffinityTerm, label_pairs: dict[LabelPair, int]) -> bool:
    """Whether a pod with these label pairs could match the term, judged by its anchors."""
    return term.anchors is None or any(pair in label_pairs for pair in term.anchors)


def _collect_topology_pairs(state: CycleState) -> None:
    """InterPodAffinity's PreFilter over all nodes: the domains holding a pod that matches all
    of the pod's affinity terms, those holding a pod that an anti-affinity term matches, and
    those where an existing pod's anti-affinity matches this pod (symmetry). The nodes' label
    indexes rule out most nodes before any pod is looked at."""
    pod = state.pod
    affinity, anti_affinity = pod.required_affinity, pod.required_anti_affinity
    own_pairs = tuple(pod.labels.items())
    if not affinity and not anti_affinity:
        # Only the symmetry part can apply: look at the nodes holding anti-affinity pods.
        nodes: Iterable[NodeInfo] = [node for node in state.all_nodes
                                     if node.pods_with_required_anti_affinity]
    else:
        nodes = state.all_nodes
    for node in nodes:
        labels = node.labels
        if affinity and _may_hold(affinity[0], node.label_pairs) and any(
                all(term.matches(other) for term in affinity) for other in node.pods.values()):
            state.affinity_pairs.update((t.topology_key, labels[t.topology_key])
                                        for t in affinity if t.topology_key in labels)
        for term in anti_affinity:
            value = labels.get(term.topology_key)
            if (value is not None and (term.topology_key, value) not in state.anti_affinity_pairs
                    and _may_hold(term, node.label_pairs)
                    and any(term.matches(other) for other in node.pods.values())):
                state.anti_affinity_pairs.add((term.topology_key, value))
        if node.pods_with_required_anti_affinity and (node.unanchored_anti_affinity_terms or any(
                pair in node.anti_affinity_anchors for pair in own_pairs)):
            for other in node.pods_with_required_anti_affinity.values():
                state.existing_anti_affinity_pairs.update(
                    (t.topology_key, labels[t.topology_key]) for t in other.required_anti_affinity
                    if t.topology_key in labels and t.matches(pod))


def prefilter(pod: PodInfo, all_nodes: Sequence[NodeInfo]) -> CycleState:
    """The CycleState for scheduling ``pod``, with only the filters that can reject it."""
    state = CycleState(pod, all_nodes)
    _collect_topology_pairs(state)
    chosen: list[Filter] = []
    if not tolerates(state.tolerations, TAINT_NODE_UNSCHEDULABLE, "", NO_SCHEDULE):
        chosen.append(node_unschedulable)
    if state.node_name:
        chosen.append(node_name)
    chosen.append(taint_toleration)
    if state.node_affinity is not None:
        chosen.append(node_affinity)
    if pod.host_ports:
        chosen.append(node_ports)
    chosen.append(node_resources_fit)
    if (pod.required_affinity or pod.required_anti_affinity
            or state.existing_anti_affinity_pairs):
        chosen.append(inter_pod_affinity)
    state.filters = tuple(chosen)
    return state


# ------------------------------------------------------------------ filters, in order


def node_unschedulable(state: CycleState, node: NodeInfo) -> Unfit | None:
    """A cordoned node (spec.unschedulable) takes only pods tolerating the unschedulable taint."""
    if node.unschedulable and not tolerates(state.tolerations, TAINT_NODE_UNSCHEDULABLE, "",
                                            NO_SCHEDULE):
        return UNSCHEDULABLE
    return None


def node_name(state: CycleState, node: NodeInfo) -> Unfit | None:
    """A pod naming its node (spec.nodeName) fits only there."""
    if state.node_name and state.node_name != node.name:
        return NODE_NAME
    return None


def taint_toleration(state: CycleState, node: NodeInfo) -> Unfit | None:
    """The first NoSchedule or NoExecute taint the pod does not tolerate rejects the node."""
    for key, value, effect in node.taints:
        if not tolerates(state.tolerations, key, value, effect):
            return Unfit((ERR_REASON_UNTOLERATED_TAINT.format(key=key, value=value),), False)
    return None


def node_affinity(state: CycleState, node: NodeInfo) -> Unfit | None:
    """nodeSelector and required node affinity."""
    if state.node_affinity is not None and not state.node_affinity(node):
        return NODE_AFFINITY
    return None


def node_ports(state: CycleState, node: NodeInfo) -> Unfit | None:
    """Every host port the pod wants must be free on the node."""
    for ip, protocol, port in state.pod.host_ports:
        if node.port_conflict(ip, protocol, port):
            return NODE_PORTS
    return None


def node_resources_fit(state: CycleState, node: NodeInfo) -> Unfit | None:
    """Pod count, then cpu, memory and ephemeral storage against allocatable minus requested;
    every shortfall is a reason of its own, as in kube-scheduler's fitsRequest."""
    pod = state.pod
    cpu, memory, storage = pod.milli_cpu, pod.memory, pod.ephemeral_storage
    too_many = len(node.pods) + 1 > node.allocatable_pods
    short_cpu = cpu > node.allocatable_milli_cpu - node.requested_milli_cpu
    short_memory = memory > node.allocatable_memory - node.requested_memory
    short_storage = storage > node.allocatable_ephemeral_storage - node.requested_ephemeral_storage
    if not (too_many or short_cpu or short_memory or short_storage):
        return None
    reasons = [ERR_REASON_TOO_MANY_PODS] if too_many else []
    for short, resource in ((short_cpu, "cpu"), (short_memory, "memory"),
                            (short_storage, "ephemeral-storage")):
        if short:
            reasons.append(ERR_REASON_INSUFFICIENT.format(resource=resource))
    return Unfit(tuple(reasons), True)


def _satisfies_pod_affinity(state: CycleState, node: NodeInfo) -> bool:
    """Every affinity term's domain here holds a matching pod; or no pod anywhere matches and
    the pod matches its own terms (the first of a group that wants to be together)."""
    pods_exist = True
    for term in state.pod.required_affinity:
        value = node.labels.get(term.topology_key)
        if value is None:
            return False
        if (term.topology_key, value) not in state.affinity_pairs:
            pods_exist = False
    return pods_exist or (not state.affinity_pairs and state.affinity_self_match)


def inter_pod_affinity(state: CycleState, node: NodeInfo) -> Unfit | None:
    """Required pod affinity, the pod's anti-affinity, then existing pods' anti-affinity."""
    labels = node.labels
    if state.pod.required_affinity and not _satisfies_pod_affinity(state, node):
        return AFFINITY_RULES
    for term in state.pod.required_anti_affinity:
        value = labels.get(term.topology_key)
        if value is not None and (term.topology_key, value) in state.anti_affinity_pairs:
            return ANTI_AFFINITY_RULES
    blocked = state.existing_anti_affinity_pairs
    if blocked and any(pair in blocked for pair in labels.items()):
        return EXISTING_ANTI_AFFINITY_RULES
    return None


Filter = Callable[[CycleState, NodeInfo], "Unfit | None"]
#: kube-scheduler's filter order; prefilter picks the ones that apply, keeping this order.
FILTERS: tuple[Filter, ...] = (node_unschedulable, node_name, taint_toleration, node_affinity,
                               node_ports, node_resources_fit, inter_pod_affinity)


def find_feasible(state: CycleState, nodes: Iterable[NodeInfo], wanted: int
                  ) -> tuple[list[NodeInfo], dict[str, Unfit]]:
    """kube-scheduler's findNodesThatPassFilters: each node goes through the pod's filters until
    the first rejection; stop once ``wanted`` nodes passed. Returns the feasible nodes and the
    rejected ones' Unfit by node name, both in the order the nodes were checked.

    Fast paths that give the same answers: a ``plain`` node (schedulable, untainted) skips
    NodeUnschedulable and TaintToleration, which pass it whatever the pod; and NodeResourcesFit,
    when it is the only filter left, is first tried as one inline comparison, the filter itself
    running only for a node that does not fit (to word the reasons)."""
    filters = state.filters
    plain_filters = tuple(f for f in filters if f is not node_unschedulable
                          and f is not taint_toleration)
    inline_fit = plain_filters == (node_resources_fit,)
    feasible: list[NodeInfo] = []
    rejected: dict[str, Unfit] = {}
    for node in nodes:
        if not (inline_fit and node.plain and _fits(state.pod, node)):
            unfit = next((u for check in (plain_filters if node.plain else filters)
                          if (u := check(state, node)) is not None), None)
            if unfit is not None:
                rejected[node.name] = unfit
                continue
        feasible.append(node)
        if len(feasible) >= wanted:
            break
    return feasible, rejected


def _fits(pod: PodInfo, node: NodeInfo) -> bool:
    """NodeResourcesFit's answer for a fitting pod, as one comparison (no reasons to word)."""
    return len(node.pods) < node.allocatable_pods \
        and pod.milli_cpu <= node.allocatable_milli_cpu - node.requested_milli_cpu \
        and pod.memory <= node.allocatable_memory - node.requested_memory \
        and pod.ephemeral_storage <= (node.allocatable_ephemeral_storage
                                      - node.requested_ephemeral_storage)
