"""The table of served kinds: one row per resource, naming its strategy.

Adding a kind is a row here and a strategy module in ``kinds/``; discovery, OpenAPI, the REST
handlers and the registry all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .kinds import (
    configmaps,
    deployments,
    endpoints,
    endpointslices,
    events,
    leases,
    namespaces,
    nodes,
    persistentvolumeclaims,
    persistentvolumes,
    pods,
    replicasets,
    secrets,
    serviceaccounts,
    services,
)
from .strategy import Strategy


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    strategy: Strategy
    #: Subresources besides the object itself: "status", "scale", "binding", "log", "eviction",
    #: "finalize", and the connect ones "exec" and "attach".
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    #: Name of the schema in OpenAPI ("io.k8s.api.core.v1.Pod").
    schema: str = ""
    verbs: tuple[str, ...] = (
        "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch",
    )

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_group(self) -> str:
        """The group segment of store keys: ``/registry/<group>/<resource>/...``."""
        return self.group or "core"

    def key_prefix(self, namespace: str = "") -> str:
        """Store prefix of every object of this type (in ``namespace``, if given)."""
        base = f"/registry/{self.storage_group}/{self.plural}/"
        return f"{base}{namespace}/" if self.namespaced and namespace else base

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"/registry/{self.storage_group}/{self.plural}/{namespace}/{name}"
        return f"/registry/{self.storage_group}/{self.plural}/{name}"


def _core(kind: str, plural: str, namespaced: bool, strategy: Strategy, **kw) -> ResourceType:
    return ResourceType("", "v1", kind, plural, kind.lower(), namespaced, strategy,
                        schema=f"io.k8s.api.core.v1.{kind}", **kw)


ALL = ("all",)
RESOURCES: tuple[ResourceType, ...] = (
    _core("Namespace", "namespaces", False, namespaces.NamespaceStrategy(),
          subresources=("status", "finalize"), short_names=("ns",)),
    _core("Pod", "pods", True, pods.PodStrategy(),
          subresources=("status", "binding", "log", "eviction", "exec", "attach"),
          short_names=("po",),
          categories=ALL),
    _core("Node", "nodes", False, nodes.NodeStrategy(), subresources=("status",),
          short_names=("no",)),
    _core("Service", "services", True, services.ServiceStrategy(), subresources=("status",),
          short_names=("svc",), categories=ALL),
    _core("Endpoints", "endpoints", True, endpoints.EndpointsStrategy(), short_names=("ep",)),
    _core("ConfigMap", "configmaps", True, configmaps.ConfigMapStrategy(), short_names=("cm",)),
    _core("Secret", "secrets", True, secrets.SecretStrategy()),
    _core("Event", "events", True, events.EventStrategy(), short_names=("ev",)),
    _core("PersistentVolume", "persistentvolumes", False,
          persistentvolumes.PersistentVolumeStrategy(), subresources=("status",),
          short_names=("pv",)),
    _core("PersistentVolumeClaim", "persistentvolumeclaims", True,
          persistentvolumeclaims.PersistentVolumeClaimStrategy(), subresources=("status",),
          short_names=("pvc",)),
    _core("ServiceAccount", "serviceaccounts", True, serviceaccounts.ServiceAccountStrategy(),
          short_names=("sa",)),
    ResourceType("apps", "v1", "Deployment", "deployments", "deployment", True,
                 deployments.DeploymentStrategy(), subresources=("status", "scale"),
                 short_names=("deploy",), categories=ALL,
                 schema="io.k8s.api.apps.v1.Deployment"),
    ResourceType("apps", "v1", "ReplicaSet", "replicasets", "replicaset", True,
                 replicasets.ReplicaSetStrategy(), subresources=("status", "scale"),
                 short_names=("rs",), categories=ALL,
                 schema="io.k8s.api.apps.v1.ReplicaSet"),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", "lease", True,
                 leases.LeaseStrategy(), schema="io.k8s.api.coordination.v1.Lease"),
    ResourceType("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice",
                 True, endpointslices.EndpointSliceStrategy(),
                 schema="io.k8s.api.discovery.v1.EndpointSlice"),
)

_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.group, r.kind): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(group: str, kind: str) -> ResourceType | None:
    return _BY_KIND.get((group, kind))


def group_versions() -> list[tuple[str, str]]:
    """Every (group, version) served, core first, in table order."""
    seen: list[tuple[str, str]] = []
    for r in RESOURCES:
        if (r.group, r.version) not in seen:
            seen.append((r.group, r.version))
    return seen
