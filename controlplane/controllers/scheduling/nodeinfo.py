"""A Node and the pods bound to it, aggregated as kube-scheduler's NodeInfo.

Flow: the taints a node carries for scheduling (its spec.taints, plus the not-ready/unreachable
taint the node lifecycle controller would add when the Ready condition is not True, so a node
without Ready=True is unschedulable whether or not that controller has caught up), ``NodeInfo``
(allocatable and requested resources as integers, used host ports, per-owner pod counts, label
indexes for inter-pod affinity, the pods themselves), its symmetric ``add_pod``/``remove_pod``,
and ``build_node_infos`` that groups a pod list by spec.nodeName.

Pods are keyed by uid (namespace/name without one); adding a pod whose key is present replaces it,
so a scheduler can add what it just bound and later re-add the same pod from a watch event.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .constants import (
    DEFAULT_BIND_ALL_HOST_IP,
    LABEL_HOSTNAME,
    NO_EXECUTE,
    NO_SCHEDULE,
    PREFER_NO_SCHEDULE,
    TAINT_NODE_NOT_READY,
    TAINT_NODE_UNREACHABLE,
)
from .podinfo import LabelPair, Pod, PodInfo, is_terminal, quantity

Node = dict[str, Any]
Taint = tuple[str, str, str]  # (key, value, effect)


def node_taints(node: Node) -> list[Taint]:
    """spec.taints, and a NoSchedule not-ready (Ready False or absent) or unreachable (Unknown)
    taint when the node is not Ready and does not already carry it."""
    taints = [(t.get("key") or "", t.get("value") or "", t.get("effect") or "")
              for t in (node.get("spec") or {}).get("taints") or ()]
    conditions = (node.get("status") or {}).get("conditions") or ()
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
    if ready != "True":
        key = TAINT_NODE_UNREACHABLE if ready == "Unknown" else TAINT_NODE_NOT_READY
        if not any(k == key and effect == NO_SCHEDULE for k, _, effect in taints):
            taints.append((key, "", NO_SCHEDULE))
    return taints


class NodeInfo:
    """What the filters and scores need of one node, kept as plain ints, sets and dicts so that
    checking a pod against it costs a few attribute reads."""

    __slots__ = ("node", "name", "labels", "unschedulable", "taints", "prefer_no_schedule_taints",
                 "allocatable_milli_cpu", "allocatable_memory", "allocatable_ephemeral_storage",
                 "allocatable_pods", "requested_milli_cpu", "requested_memory",
                 "requested_ephemeral_storage", "non_zero_requested_milli_cpu",
                 "non_zero_requested_memory", "pods", "used_ports", "used_port_numbers",
                 "owner_counts", "label_pairs", "pods_with_required_anti_affinity",
                 "anti_affinity_anchors", "unanchored_anti_affinity_terms", "plain")

    def __init__(self, node: Node, pods: Iterable[Pod | PodInfo] = ()):
        """The node and those of ``pods`` that are bound to it and not terminal."""
        meta = node.get("metadata") or {}
        status = node.get("status") or {}
        self.node = node
        self.name: str = meta.get("name") or ""
        # The kubelet always sets the hostname label; topology keys rely on it.
        self.labels: dict[str, str] = {LABEL_HOSTNAME: self.name, **(meta.get("labels") or {})}
        self.unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
        taints = node_taints(node)
        self.taints = tuple(t for t in taints if t[2] in (NO_SCHEDULE, NO_EXECUTE))
        self.prefer_no_schedule_taints = tuple(t for t in taints if t[2] == PREFER_NO_SCHEDULE)
        #: Schedulable and without NoSchedule/NoExecute taints: NodeUnschedulable and
        #: TaintToleration cannot reject it, so filtering skips them (most nodes, most of the
        #: time).
        self.plain = not self.unschedulable and not self.taints
        # The API server defaults allocatable to capacity.
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        self.allocatable_milli_cpu = quantity(allocatable.get("cpu"), 1000)
        self.allocatable_memory = quantity(allocatable.get("memory"))
        self.allocatable_ephemeral_storage = quantity(allocatable.get("ephemeral-storage"))
        self.allocatable_pods = quantity(allocatable.get("pods"))
        self.requested_milli_cpu = self.requested_memory = self.requested_ephemeral_storage = 0
        self.non_zero_requested_milli_cpu = self.non_zero_requested_memory = 0
        self.pods: dict[str, PodInfo] = {}
        # Live counts only (no zeros): a key's presence means "in use".
        self.used_ports: dict[tuple[str, str, int], int] = {}
        self.used_port_numbers: dict[tuple[str, int], int] = {}
        self.owner_counts: dict[str, int] = {}  # controller uid -> pods not terminating
        # Indexes that let inter-pod (anti-)affinity skip nodes that cannot hold a match:
        # the pods' label pairs, and the anchors of the required anti-affinity terms here.
        self.label_pairs: dict[LabelPair, int] = {}
        self.pods_with_required_anti_affinity: dict[str, PodInfo] = {}
        self.anti_affinity_anchors: dict[LabelPair, int] = {}
        self.unanchored_anti_affinity_terms = 0
        for pod in pods:
            raw = pod.pod if isinstance(pod, PodInfo) else pod
            if (raw.get("spec") or {}).get("nodeName") == self.name and not is_terminal(raw):
                self.add_pod(pod)

    def add_pod(self, pod: Pod | PodInfo) -> None:
        """Account for a pod placed here (bound, or about to be), replacing one with its key."""
        info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        if info.key in self.pods:
            self.remove_pod(info)
        self.pods[info.key] = info
        self._update(info, 1)

    def remove_pod(self, pod: Pod | PodInfo) -> bool:
        """Forget a pod (deleted, finished, or a binding that failed); False if it was not here."""
        key = pod.key if isinstance(pod, PodInfo) else PodInfo(pod).key
        info = self.pods.pop(key, None)
        if info is None:
            return False
        self._update(info, -1)
        return True

    def _update(self, info: PodInfo, sign: int) -> None:
        """Add (sign 1) or subtract (sign -1) exactly what the pod's PodInfo says, so a removal
        undoes its addition even if the pod dict changed in between."""
        self.requested_milli_cpu += sign * info.milli_cpu
        self.requested_memory += sign * info.memory
        self.requested_ephemeral_storage += sign * info.ephemeral_storage
        self.non_zero_requested_milli_cpu += sign * info.non_zero_milli_cpu
        self.non_zero_requested_memory += sign * info.non_zero_memory
        for ip, protocol, port in info.host_ports:
            _bump(self.used_ports, (ip, protocol, port), sign)
            _bump(self.used_port_numbers, (protocol, port), sign)
        if info.controller_uid is not None and not info.terminating:
            _bump(self.owner_counts, info.controller_uid, sign)
        for pair in info.labels.items():
            _bump(self.label_pairs, pair, sign)
        for term in info.required_anti_affinity:
            if term.anchors is None:
                self.unanchored_anti_affinity_terms += sign
            for pair in term.anchors or ():
                _bump(self.anti_affinity_anchors, pair, sign)
        if sign < 0:
            self.pods_with_required_anti_affinity.pop(info.key, None)
        elif info.required_anti_affinity:
            self.pods_with_required_anti_affinity[info.key] = info

    def port_conflict(self, ip: str, protocol: str, port: int) -> bool:
        """HostPortInfo.CheckConflict: 0.0.0.0 clashes with the same protocol and port on any IP."""
        if ip == DEFAULT_BIND_ALL_HOST_IP:
            return (protocol, port) in self.used_port_numbers
        return ((DEFAULT_BIND_ALL_HOST_IP, protocol, port) in self.used_ports
                or (ip, protocol, port) in self.used_ports)

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, pods={len(self.pods)})"


def _bump(counts: dict[Any, int], key: Any, delta: int) -> None:
    """Add delta to a count, dropping the key at zero."""
    value = counts.get(key, 0) + delta
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


def build_node_infos(nodes: Iterable[Node], pods: Iterable[Pod]) -> list[NodeInfo]:
    """One NodeInfo a node, in the nodes' order, each with its bound, non-terminal pods."""
    by_node: dict[str, list[Pod]] = {}
    for pod in pods:
        name = (pod.get("spec") or {}).get("nodeName")
        if name:
            by_node.setdefault(name, []).append(pod)
    return [NodeInfo(node, by_node.get((node.get("metadata") or {}).get("name") or "", ()))
            for node in nodes]
