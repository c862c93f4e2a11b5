"""The endpoints controller: for every Service with a selector, an Endpoints object of the same
name listing the Pods behind it (Kubernetes' endpoints_controller.go in small).

Flow, in code order: the pure core first. ``selects`` says whether a Service selects a Pod;
``pod_endpoints`` turns a Service and its Pods into one ``PodEndpoint`` per Pod that belongs
behind it (an IP, not finished; terminating Pods only with ``publishNotReadyAddresses``,
except for slices, which carry them with ``terminating``), its ports resolved per Service
port from ``targetPort`` (a number, or a container port name looked up in that Pod: a Pod
without the name gets no port for it); ``desired_endpoints`` packs those into subsets as
Kubernetes' ``RepackSubsets`` does: Pods whose ports resolve alike share a subset, ready ones
under ``addresses`` and the others under ``notReadyAddresses`` (with
``publishNotReadyAddresses`` all are ready).

Then the shell: informers on Services (indexed by namespace), Pods and Endpoints; handlers
enqueue Service keys only (a Pod's event maps to the Services of its namespace that select
it, before and after the change). ``reconcile(key)`` writes the Endpoints of a Service with a
selector (create, or an update carrying the read resourceVersion: compare-and-swap; nothing
when equal), leaves those of a Service without one alone (user-managed), and deletes them,
with a resourceVersion precondition, when the Service is gone (deleted while we watched, or
a leftover this controller made, labelled ``endpoints.kubernetes.io/managed-by``).

Each Endpoints written carries ``endpoints.kubernetes.io/last-change-trigger-time`` (RFC 3339,
microseconds), from which the Service proxy measures its programming latency (kube-proxy's
``network_programming_duration_seconds``): the earliest Pod or Service change the write is the
first to include, as Kubernetes' ``TriggerTimeTracker`` computes it. Kubernetes takes that time
from the objects (the Pod's Ready ``lastTransitionTime``, the Service's
``creationTimestamp``); those are whole seconds here, so the time is when this controller's
informer delivered the change (``ServicePods`` with a clock), which leaves out only the watch's
delivery. A write with no new change behind it (a tampered Endpoints put right) drops the
annotation, as Kubernetes does; a change that leaves the Endpoints as they were is forgotten.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..client import (
    ENDPOINTS,
    PODS,
    SERVICES,
    AlreadyExists,
    ApiClient,
    Conflict,
    FuncHandler,
    InformerFactory,
    NotFound,
    WorkQueue,
    key_of,
    run_controller,
)
from ..client.timestamps import format_micro_time
from .pods import pod_ready

log = logging.getLogger(__name__)

Obj = dict[str, Any]

#: Label on Endpoints this controller writes (Kubernetes 1.33's LabelManagedBy).
MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
MANAGED_BY = "endpoint-controller"
#: Label Kubernetes puts on the Endpoints (and slices) of a headless Service.
HEADLESS_LABEL = "service.kubernetes.io/headless"
#: Index of the Services informer: the namespace of each Service.
NAMESPACE_INDEX = "namespace"
#: Kubernetes' v1.EndpointsLastChangeTriggerTime (read by ``nodeagent.proxy.proxier``).
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


def namespace_of(obj: Obj) -> list[str]:
    """Index: an object's namespace."""
    namespace = (obj.get("metadata") or {}).get("namespace")
    return [namespace] if namespace else []


# -- the pure core ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodEndpoint:
    """One Pod behind a Service: its address and the ports it serves the Service's ports on."""

    ip: str
    address: Obj  # an EndpointAddress: ip, hostname, nodeName, targetRef
    ready: bool  # Ready condition True
    terminating: bool  # deletionTimestamp set
    ports: tuple[tuple[str, int, str, str], ...]  # (name, port, protocol, appProtocol)

    @property
    def family(self) -> str:
        """The EndpointSlice addressType of this endpoint's IP."""
        return "IPv6" if ipaddress.ip_address(self.ip).version == 6 else "IPv4"


def service_selector(service: Obj) -> dict[str, str] | None:
    """The Service's selector, None for a Service without one (its Endpoints are the user's)."""
    selector = (service.get("spec") or {}).get("selector")
    return dict(selector) if selector else None


def selects(service: Obj, pod: Obj) -> bool:
    selector = service_selector(service)
    if selector is None or \
            (pod.get("metadata") or {}).get("namespace") != service["metadata"].get("namespace"):
        return False
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def is_headless(service: Obj) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def find_port(pod: Obj, service_port: Obj) -> int | None:
    """The Pod's port for a Service port (Kubernetes' ``podutil.FindPort``): a numeric
    ``targetPort`` as is (``port`` when unset), a name looked up among the Pod's container
    ports of the same protocol; None if the Pod has no such port."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return port.get("containerPort")
    return None


def pod_endpoints(service: Obj, pods: list[Obj], *,
                  keep_terminating: bool = False) -> list[PodEndpoint]:
    """The Pods (already selected) that belong behind ``service``, in a stable order.

    A Pod belongs with an IP and not finished; a terminating one only with
    ``publishNotReadyAddresses`` or ``keep_terminating`` (slices mark them instead)."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    name, namespace = service["metadata"]["name"], service["metadata"].get("namespace")
    out: list[PodEndpoint] = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        ip = status.get("podIP") or ""
        terminating = bool(meta.get("deletionTimestamp"))
        if not ip or status.get("phase") in ("Failed", "Succeeded") or \
                (terminating and not publish and not keep_terminating):
            continue
        pod_spec = pod.get("spec") or {}
        address: Obj = {"ip": ip}
        if pod_spec.get("hostname") and pod_spec.get("subdomain") == name and \
                meta.get("namespace") == namespace:
            address["hostname"] = pod_spec["hostname"]
        if pod_spec.get("nodeName"):
            address["nodeName"] = pod_spec["nodeName"]
        address["targetRef"] = {"kind": "Pod", "name": meta.get("name"),
                                "namespace": meta.get("namespace"), "uid": meta.get("uid")}
        ports = []
        for sp in spec.get("ports") or ():
            number = find_port(pod, sp)
            if number is None:
                log.debug("pod %s/%s has no port %r for service %s/%s", meta.get("namespace"),
                          meta.get("name"), sp.get("targetPort"), namespace, name)
                continue
            ports.append((sp.get("name") or "", number, sp.get("protocol") or "TCP",
                          sp.get("appProtocol") or ""))
        out.append(PodEndpoint(ip, address, pod_ready(pod), terminating, tuple(sorted(ports))))
    return sorted(out, key=lambda e: (e.ip, e.address["targetRef"]["uid"] or ""))


def port_object(port: tuple[str, int, str, str]) -> Obj:
    name, number, protocol, app_protocol = port
    out: Obj = {"name": name, "port": number, "protocol": protocol} if name else \
        {"port": number, "protocol": protocol}
    if app_protocol:
        out["appProtocol"] = app_protocol
    return out


def desired_endpoints(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The ``subsets`` of the Service's Endpoints, packed as Kubernetes' ``RepackSubsets``:
    one subset per distinct set of Pods sharing a set of resolved ports."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    has_ports = bool(spec.get("ports"))
    # port -> {address key: (address, ready)}: what Kubernetes' mapAddressesByPort builds.
    by_port: dict[tuple[str, int, str, str] | None, dict[tuple[str, str], tuple[Obj, bool]]] = {}
    for endpoint in pod_endpoints(service, pods):
        ready = publish or endpoint.ready
        ports: tuple[tuple[str, int, str, str] | None, ...] = endpoint.ports
        if not has_ports:
            if not is_headless(service):
                continue  # a Service without ports has endpoints only when headless
            ports = (None,)
        key = (endpoint.ip, endpoint.address["targetRef"]["uid"] or "")
        for port in ports:
            addresses = by_port.setdefault(port, {})
            if ready or key not in addresses:
                addresses[key] = (endpoint.address, ready)
    # Ports with identical address sets share a subset.
    groups: dict[tuple, tuple[dict, list]] = {}
    for port, addresses in by_port.items():
        signature = tuple(sorted((k, ready) for k, (_a, ready) in addresses.items()))
        groups.setdefault(signature, (addresses, []))[1].append(port)
    subsets = []
    for addresses, ports in groups.values():
        subset: Obj = {}
        items = sorted(addresses.items())
        ready = [a for _k, (a, r) in items if r]
        not_ready = [a for _k, (a, r) in items if not r]
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        real_ports = sorted(p for p in ports if p is not None)
        if real_ports:
            subset["ports"] = [port_object(p) for p in real_ports]
        subsets.append(subset)
    return sorted(subsets, key=_subset_order)


def _subset_order(subset: Obj) -> tuple:
    first = (subset.get("addresses") or subset.get("notReadyAddresses") or [{}])[0]
    return (first.get("ip") or "", [(p.get("name", ""), p["port"]) for p in
                                    subset.get("ports") or ()])


def endpoints_labels(service: Obj) -> dict[str, str]:
    """The Service's labels, plus the headless label and ours."""
    labels = dict(service["metadata"].get("labels") or {})
    labels.pop(HEADLESS_LABEL, None)
    if is_headless(service):
        labels[HEADLESS_LABEL] = ""
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    return labels


def format_trigger_time(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds (Kubernetes writes RFC3339Nano)."""
    return format_micro_time(seconds)


def with_trigger_time(meta: Obj, trigger: float | None) -> Obj:
    """``meta`` with the trigger-time annotation set to ``trigger``, or without it for None."""
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != TRIGGER_TIME_ANNOTATION}
    if trigger is not None:
        annotations[TRIGGER_TIME_ANNOTATION] = format_trigger_time(trigger)
    return {**meta, "annotations": annotations} if annotations else \
        {k: v for k, v in meta.items() if k != "annotations"}


# -- the shell -----------------------------------------------------------------------------------

class ServicePods:
    """Shared by the endpoints and endpointslice controllers: informers on Services and Pods,
    and the map from a Pod's event to the keys of the Services selecting it. With a ``clock``
    (wall time, seconds) it also keeps, per Service key, when the earliest change not yet
    taken (``take_trigger_time``) arrived."""

    def __init__(self, informers: InformerFactory, queue: WorkQueue, *,
                 clock: Callable[[], float] | None = None) -> None:
        self.queue = queue
        self._clock = clock
        self._triggers: dict[str, float] = {}
        #: Keys of Services seen deleted, whose dependents go whoever made them.
        self.deleted: set[str] = set()
        self.services = informers.informer(SERVICES, indexers={NAMESPACE_INDEX: namespace_of})
        self.pods = informers.informer(PODS)
        self.services.add_handler(FuncHandler(
            self._enqueue, lambda old, new: self._enqueue(new), self._service_deleted))
        self.pods.add_handler(FuncHandler(
            lambda pod: self._pod_changed(pod), lambda old, new: self._pod_changed(new, old),
            lambda pod: self._pod_changed(pod)))

    def _add(self, key: str) -> None:
        if self._clock is not None:
            self._triggers.setdefault(key, self._clock())
        self.queue.add(key)

    def _enqueue(self, service: Obj) -> None:
        self._add(key_of(service))

    def _service_deleted(self, service: Obj) -> None:
        self.deleted.add(key_of(service))
        self._add(key_of(service))

    def _pod_changed(self, pod: Obj, old: Obj | None = None) -> None:
        namespace = pod["metadata"].get("namespace") or ""
        for service in self.services.by_index(NAMESPACE_INDEX, namespace):
            if selects(service, pod) or (old is not None and selects(service, old)):
                self._add(key_of(service))

    def take_trigger_time(self, key: str) -> float | None:
        """When the earliest change of ``key``'s Service or Pods not taken before arrived."""
        return self._triggers.pop(key, None)

    def put_back_trigger_time(self, key: str, seconds: float) -> None:
        """Give back a taken time whose change was not written after all."""
        self._triggers[key] = min(seconds, self._triggers.get(key, seconds))

    def selected(self, service: Obj) -> list[Obj]:
        """The Pods ``service`` selects (its namespace's, from the cache)."""
        return [p for p in self.pods.list() if selects(service, p)]


class EndpointsController:
    def __init__(self, client: ApiClient, *, workers: int = 2,
                 informers: InformerFactory | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._workers = workers
        self._queue = WorkQueue()
        self._shared = ServicePods(informers, self._queue, clock=clock)
        self._endpoints = informers.informer(ENDPOINTS)
        # Endpoints changed or deleted behind our back are put right; leftovers (the initial
        # list reaches the handler as adds) are looked at once.
        self._endpoints.add_handler(FuncHandler(self._enqueue, lambda old, new:
                                                self._enqueue(new), self._enqueue))

    async def run(self) -> None:
        await run_controller("endpoints", [self._shared.services, self._shared.pods,
                                           self._endpoints], self._queue, self.reconcile,
                             workers=self._workers)

    def _enqueue(self, endpoints: Obj) -> None:
        self._queue.add(key_of(endpoints))

    async def reconcile(self, key: str) -> None:
        # Taken first: the caches read below hold every change that arrived before it.
        trigger = self._shared.take_trigger_time(key)
        settled = False
        try:
            settled = await self._sync(key, trigger)
        finally:
            if not settled and trigger is not None:
                self._shared.put_back_trigger_time(key, trigger)

    async def _sync(self, key: str, trigger: float | None) -> bool:
        """Bring ``key``'s Endpoints in line; False when a write lost a race (the event that
        won brings the key back)."""
        service = self._shared.services.get(key)
        current = self._endpoints.get(key)
        deleted = key in self._shared.deleted
        self._shared.deleted.discard(key)
        if service is None:
            if current is not None and (deleted or (current["metadata"].get("labels") or {})
                                        .get(MANAGED_BY_LABEL) == MANAGED_BY):
                await self._delete(current)
            return True
        if service_selector(service) is None or service["metadata"].get("deletionTimestamp"):
            return True
        subsets = desired_endpoints(service, self._shared.selected(service))
        labels = endpoints_labels(service)
        namespace, name = key.split("/", 1)
        if current is None:
            meta: Obj = {"name": name, "namespace": namespace, "labels": labels}
            try:
                await self._client.create(ENDPOINTS, namespace, {
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": with_trigger_time(meta, trigger), "subsets": subsets})
            except AlreadyExists:
                return False  # our informer will tell us of it, and we look again
            return True
        meta = current["metadata"]
        if (current.get("subsets") or []) == subsets and (meta.get("labels") or {}) == labels:
            return True
        try:
            await self._client.update(ENDPOINTS, {
                **current, "metadata": with_trigger_time({**meta, "labels": labels}, trigger),
                "subsets": subsets})
        except (Conflict, NotFound):
            return False  # changed meanwhile: the event brings the key back
        return True

    async def _delete(self, endpoints: Obj) -> None:
        meta = endpoints["metadata"]
        try:
            await self._client.delete(ENDPOINTS, meta["namespace"], meta["name"],
                                      resource_version=meta["resourceVersion"])
        except (Conflict, NotFound):
            pass
