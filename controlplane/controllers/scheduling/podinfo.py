"""A Pod as the scheduler reads it, parsed once into ``PodInfo`` (kube-scheduler's PodInfo).

Flow: quantities to integers (millicores, bytes; cached, since a cluster repeats a few strings),
a pod's requests as Kubernetes' ``PodRequests`` computes them (containers summed, init containers
as a peak, sidecar init containers added to both, overhead on top; once as requested and once with
scoring's non-zero defaults for missing cpu/memory), its host ports, its required inter-pod
(anti-)affinity terms, and ``PodInfo`` holding all of it for filters, scores and NodeInfo.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from controlplane.api.selectors import DOUBLE_EQUALS, EQUALS, IN, LabelSelector
from controlplane.client.quantity import parse_quantity

from .constants import (
    DEFAULT_BIND_ALL_HOST_IP,
    DEFAULT_MEMORY_REQUEST_B,
    DEFAULT_MILLI_CPU_REQUEST,
    PROTOCOL_TCP,
)

Pod = dict[str, Any]
HostPort = tuple[str, str, int]  # (hostIP, protocol, hostPort), defaults filled in

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
RESTART_POLICY_ALWAYS = "Always"  # an init container with it is a sidecar


@functools.lru_cache(maxsize=4096)
def _scaled(value: str | int | float, scale: int) -> int:
    """Quantity.MilliValue (scale 1000) or Value (scale 1): rounded up, as Kubernetes does."""
    try:
        return math.ceil(parse_quantity(value) * scale)
    except ValueError:
        return 0  # the API validates requests; a bad one here counts as zero, never a crash


def quantity(value: Any, scale: int = 1) -> int:
    """A resource quantity as an integer number of 1/scale units; 0 when it is not one."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return 0
    return _scaled(value, scale)


def _container_requests(container: dict[str, Any]) -> list[int]:
    """[cpu m, memory B, ephemeral-storage B, non-zero cpu m, non-zero memory B]: missing (not
    zero) cpu and memory take the defaults in the non-zero pair (NonMissingContainerRequests)."""
    requests = (container.get("resources") or {}).get("requests") or {}
    cpu = quantity(requests.get("cpu"), 1000)
    memory = quantity(requests.get("memory"))
    return [cpu, memory, quantity(requests.get("ephemeral-storage")),
            cpu if "cpu" in requests else DEFAULT_MILLI_CPU_REQUEST,
            memory if "memory" in requests else DEFAULT_MEMORY_REQUEST_B]


def pod_requests(spec: dict[str, Any]) -> list[int]:
    """Kubernetes' PodRequests: what the pod reserves on a node, as ``_container_requests``'
    five numbers. Init containers run one at a time before the app containers, so only their peak
    counts; sidecars keep running, so they add to everything started after them."""
    total = [0] * 5
    for container in spec.get("containers") or ():
        total = [a + b for a, b in zip(total, _container_requests(container))]
    sidecars = [0] * 5
    init_peak = [0] * 5
    for container in spec.get("initContainers") or ():
        own = _container_requests(container)
        if container.get("restartPolicy") == RESTART_POLICY_ALWAYS:
            total = [a + b for a, b in zip(total, own)]
            sidecars = [a + b for a, b in zip(sidecars, own)]
            running = sidecars
        else:
            running = [a + b for a, b in zip(own, sidecars)]
        init_peak = [max(a, b) for a, b in zip(init_peak, running)]
    total = [max(a, b) for a, b in zip(total, init_peak)]
    overhead = spec.get("overhead") or {}
    cpu, memory = quantity(overhead.get("cpu"), 1000), quantity(overhead.get("memory"))
    extra = (cpu, memory, quantity(overhead.get("ephemeral-storage")), cpu, memory)
    return [a + b for a, b in zip(total, extra)]


def host_ports(spec: dict[str, Any]) -> tuple[HostPort, ...]:
    """The ports the pod binds on its node: app and sidecar containers' ports with a hostPort."""
    containers = list(spec.get("containers") or ())
    containers += [c for c in spec.get("initContainers") or ()
                   if c.get("restartPolicy") == RESTART_POLICY_ALWAYS]
    found = []
    for container in containers:
        for port in container.get("ports") or ():
            number = port.get("hostPort")
            if isinstance(number, int) and not isinstance(number, bool) and number > 0:
                found.append((port.get("hostIP") or DEFAULT_BIND_ALL_HOST_IP,
                              port.get("protocol") or PROTOCOL_TCP, number))
    return tuple(found)


LabelPair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A required PodAffinityTerm: which pods it is about (namespaces, None for all, and a label
    selector) and the node label whose value makes a topology domain. ``anchors`` are label
    pairs of which a matching pod must carry one (from an equality or In requirement), None when
    the selector has no such requirement: they let a node without any of them be skipped."""

    namespaces: frozenset[str] | None
    selector: LabelSelector
    topology_key: str
    anchors: frozenset[LabelPair] | None

    def matches(self, pod: PodInfo) -> bool:
        return ((self.namespaces is None or pod.namespace in self.namespaces)
                and self.selector.matches(pod.labels))


def _anchors(selector: LabelSelector) -> frozenset[LabelPair] | None:
    """The pairs of the selector's first equality or In requirement; a selector that matches
    nothing has none at all (the empty set), so it is never looked for."""
    if selector.nothing:
        return frozenset()
    for req in selector.requirements:
        if req.operator in (EQUALS, DOUBLE_EQUALS, IN):
            return frozenset((req.key, value) for value in req.values)
    return None


def affinity_terms(terms: Any, namespace: str) -> tuple[AffinityTerm, ...]:
    """Kubernetes' GetAffinityTerms. No namespaces and no namespaceSelector mean the pod's own
    namespace; an empty namespaceSelector means all of them. A bad selector matches nothing."""
    parsed = []
    for term in terms or ():
        try:
            selector = LabelSelector.from_object(term.get("labelSelector"))
        except ValueError:
            selector = LabelSelector(nothing=True)
        names = frozenset(term.get("namespaces") or ())
        namespace_selector = term.get("namespaceSelector")
        if not names and namespace_selector is None:
            namespaces: frozenset[str] | None = frozenset({namespace})
        elif namespace_selector is not None and not (namespace_selector.get("matchLabels")
                                                     or namespace_selector.get("matchExpressions")):
            namespaces = None
        else:
            namespaces = names  # namespaceSelector terms need Namespace labels: not evaluated
        parsed.append(AffinityTerm(namespaces, selector, term.get("topologyKey") or "",
                                   _anchors(selector)))
    return tuple(parsed)


def is_terminal(pod: Pod) -> bool:
    """Succeeded and Failed pods hold no resources on their node."""
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


class PodInfo:
    """A pod's scheduling-relevant facts, computed once so that filtering and scoring it on a
    thousand nodes, and accounting for it in NodeInfo, never re-read the dict."""

    __slots__ = ("pod", "key", "namespace", "name", "labels", "spec", "milli_cpu", "memory",
                 "ephemeral_storage", "non_zero_milli_cpu", "non_zero_memory", "host_ports",
                 "controller_uid", "terminating", "preemption_policy", "required_affinity",
                 "required_anti_affinity")

    def __init__(self, pod: Pod):
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.spec = spec
        self.namespace = meta.get("namespace") or "default"
        self.name = meta.get("name") or ""
        self.key = meta.get("uid") or f"{self.namespace}/{self.name}"
        self.labels: dict[str, str] = meta.get("labels") or {}
        (self.milli_cpu, self.memory, self.ephemeral_storage,
         self.non_zero_milli_cpu, self.non_zero_memory) = pod_requests(spec)
        self.host_ports = host_ports(spec)
        self.controller_uid: str | None = next(
            (ref.get("uid") for ref in meta.get("ownerReferences") or () if ref.get("controller")),
            None)
        self.terminating = meta.get("deletionTimestamp") is not None
        self.preemption_policy = spec.get("preemptionPolicy")
        affinity = spec.get("affinity") or {}
        self.required_affinity = affinity_terms(
            (affinity.get("podAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"), self.namespace)
        self.required_anti_affinity = affinity_terms(
            (affinity.get("podAntiAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"), self.namespace)

    def __repr__(self) -> str:
        return f"PodInfo({self.key!r})"
