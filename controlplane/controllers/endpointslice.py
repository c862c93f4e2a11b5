"""The endpointslice controller: the Pods behind every Service with a selector, as
discovery.k8s.io/v1 EndpointSlices (Kubernetes' endpointslice controller, in small).

Flow, in code order: ``desired_slices`` (pure) takes the same ``pod_endpoints`` as the
endpoints controller, terminating Pods included (``conditions.terminating``; ``ready`` is
serving and not terminating, or always with ``publishNotReadyAddresses``), groups them by
address family and resolved ports (Pods whose named port differs land in separate slices) and
cuts each group into slices of at most ``MAX_ENDPOINTS_PER_SLICE``, named
``<service>-<hash of family, ports and index>`` so that a rerun names them alike; a Service with
no endpoints gets one empty placeholder slice, as in Kubernetes. Each slice carries the labels
``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by`` and an
ownerReference to its Service.

The shell: informers on Services and Pods (shared with the endpoints controller through
``ServicePods``) and on EndpointSlices indexed by their Service; ``reconcile(key)`` creates the
missing slices, updates changed ones with the resourceVersion read (compare-and-swap), deletes
those no longer wanted (with a resourceVersion precondition) and, when the Service is gone,
all of its managed slices. Slices not managed by this controller are never touched.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..client import (
    ENDPOINTSLICES,
    AlreadyExists,
    ApiClient,
    Conflict,
    FuncHandler,
    InformerFactory,
    NotFound,
    WorkQueue,
    run_controller,
)
from .endpoints import (
    HEADLESS_LABEL,
    PodEndpoint,
    ServicePods,
    is_headless,
    pod_endpoints,
    service_selector,
)

Obj = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
#: Kubernetes' --max-endpoints-per-slice default.
MAX_ENDPOINTS_PER_SLICE = 100
#: Index of the EndpointSlices informer: "<namespace>/<service>" of the slice's service label.
SERVICE_INDEX = "endpointslice-service"
#: Room left in a 63-character name for "-" and the hash.
NAME_HASH_LENGTH = 10
NAME_PREFIX_MAX = 63 - 1 - NAME_HASH_LENGTH


def slice_service(obj: Obj) -> list[str]:
    """Index: the Service key a slice belongs to, by its label."""
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{meta.get('namespace')}/{service}"] if service else []


# -- the pure core ------------------------------------------------------------------------------

def _slice_endpoint(endpoint: PodEndpoint, publish: bool) -> Obj:
    out: Obj = {"addresses": [endpoint.ip], "conditions": {
        "ready": publish or (endpoint.ready and not endpoint.terminating),
        "serving": endpoint.ready, "terminating": endpoint.terminating}}
    for field in ("hostname", "nodeName", "targetRef"):
        if field in endpoint.address:
            out[field] = endpoint.address[field]
    return out


def _slice_port(port: tuple[str, int, str, str]) -> Obj:
    name, number, protocol, app_protocol = port
    out: Obj = {"name": name, "port": number, "protocol": protocol}
    if app_protocol:
        out["appProtocol"] = app_protocol
    return out


def slice_name(service_name: str, address_type: str, ports: tuple, index: int) -> str:
    digest = hashlib.sha256(repr((address_type, ports, index)).encode()).hexdigest()
    return f"{service_name[:NAME_PREFIX_MAX]}-{digest[:NAME_HASH_LENGTH]}"


def desired_slices(service: Obj, pods: list[Obj], *,
                   max_endpoints: int = MAX_ENDPOINTS_PER_SLICE) -> list[Obj]:
    """The EndpointSlices of ``service`` given the Pods it selects, sorted by name."""
    meta = service["metadata"]
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    groups: dict[tuple[str, tuple], list[PodEndpoint]] = {}
    for endpoint in pod_endpoints(service, pods, keep_terminating=True):
        groups.setdefault((endpoint.family, endpoint.ports), []).append(endpoint)
    if not groups:
        families = (service.get("spec") or {}).get("ipFamilies") or ["IPv4"]
        groups[(families[0], ())] = []
    labels = {**(meta.get("labels") or {}), SERVICE_NAME_LABEL: meta["name"],
              MANAGED_BY_LABEL: MANAGED_BY}
    labels.pop(HEADLESS_LABEL, None)
    if is_headless(service):
        labels[HEADLESS_LABEL] = ""
    owner = {"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta["uid"],
             "controller": True, "blockOwnerDeletion": True}
    slices = []
    for (family, ports), endpoints in sorted(groups.items(), key=lambda g: g[0]):
        chunks = [endpoints[i:i + max_endpoints]
                  for i in range(0, len(endpoints), max_endpoints)] or [[]]
        for index, chunk in enumerate(chunks):
            slices.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name(meta["name"], family, ports, index),
                             "namespace": meta.get("namespace"), "labels": dict(labels),
                             "ownerReferences": [owner]},
                "addressType": family,
                "endpoints": [_slice_endpoint(e, publish) for e in chunk],
                "ports": [_slice_port(p) for p in ports],
            })
    return sorted(slices, key=lambda s: s["metadata"]["name"])


def _same(current: Obj, want: Obj) -> bool:
    meta, want_meta = current["metadata"], want["metadata"]
    return all((current.get(f) or []) == want[f] for f in ("endpoints", "ports")) and \
        current.get("addressType") == want["addressType"] and \
        (meta.get("labels") or {}) == want_meta["labels"] and \
        (meta.get("ownerReferences") or []) == want_meta["ownerReferences"]


def _managed(obj: Obj) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY


# -- the shell -----------------------------------------------------------------------------------

class EndpointSliceController:
    def __init__(self, client: ApiClient, *, workers: int = 2,
                 max_endpoints: int = MAX_ENDPOINTS_PER_SLICE,
                 informers: InformerFactory | None = None) -> None:
        informers = informers or InformerFactory(client)
        self._client = client
        self._workers = workers
        self._max = max_endpoints
        self._queue = WorkQueue()
        self._shared = ServicePods(informers, self._queue)
        self._slices = informers.informer(ENDPOINTSLICES, indexers={SERVICE_INDEX: slice_service})
        self._slices.add_handler(FuncHandler(
            self._enqueue, lambda old, new: (self._enqueue(old), self._enqueue(new)),
            self._enqueue))

    async def run(self) -> None:
        await run_controller("endpointslice", [self._shared.services, self._shared.pods,
                                               self._slices], self._queue, self.reconcile,
                             workers=self._workers)

    def _enqueue(self, endpoint_slice: Obj) -> None:
        if _managed(endpoint_slice):
            for key in slice_service(endpoint_slice):
                self._queue.add(key)

    async def reconcile(self, key: str) -> None:
        self._shared.deleted.discard(key)
        service = self._shared.services.get(key)
        current = {s["metadata"]["name"]: s for s in self._slices.by_index(SERVICE_INDEX, key)
                   if _managed(s)}
        if service is None:
            for endpoint_slice in current.values():
                await self._delete(endpoint_slice)
            return
        if service_selector(service) is None or service["metadata"].get("deletionTimestamp"):
            return
        namespace = service["metadata"]["namespace"]
        desired = desired_slices(service, self._shared.selected(service),
                                 max_endpoints=self._max)
        for want in desired:
            have = current.pop(want["metadata"]["name"], None)
            try:
                if have is None:
                    await self._client.create(ENDPOINTSLICES, namespace, want)
                elif not _same(have, want):
                    meta = {**have["metadata"], "labels": want["metadata"]["labels"],
                            "ownerReferences": want["metadata"]["ownerReferences"]}
                    await self._client.update(ENDPOINTSLICES, {**have, **want, "metadata": meta})
            except (AlreadyExists, Conflict, NotFound):
                pass  # changed meanwhile: the event brings the key back
        for stale in current.values():
            await self._delete(stale)

    async def _delete(self, endpoint_slice: Obj) -> None:
        meta = endpoint_slice["metadata"]
        try:
            await self._client.delete(ENDPOINTSLICES, meta["namespace"], meta["name"],
                                      resource_version=meta["resourceVersion"])
        except (Conflict, NotFound):
            pass
