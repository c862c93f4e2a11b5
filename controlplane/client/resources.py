"""The resources a client names: group, version, plural, kind and scope, and their URLs.

A ``Resource`` is the client's view of one row of the server's table of kinds (the server's
own table lives in ``controlplane.api``, which clients may not import). ``path`` builds the
REST URL of a collection, an object or a subresource; the constants below are the kinds the
API server serves (docs/api.md), all of them in ``SERVED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``apiVersion`` of this kind's objects ("v1", "apps/v1")."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str = "", subresource: str = "") -> str:
        """The URL path of the collection (no ``name``), an object or one of its subresources.

        A namespaced resource without a namespace is its collection across all namespaces;
        a cluster-scoped one ignores ``namespace``. Names are quoted so that no name can
        reach another URL.
        """
        if subresource and not name:
            raise ValueError(f"subresource {subresource!r} of {self.plural} needs a name")
        parts = ["/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


def _core(plural: str, kind: str, namespaced: bool) -> Resource:
    return Resource("", "v1", plural, kind, namespaced)


NAMESPACES = _core("namespaces", "Namespace", False)
PODS = _core("pods", "Pod", True)
NODES = _core("nodes", "Node", False)
SERVICES = _core("services", "Service", True)
ENDPOINTS = _core("endpoints", "Endpoints", True)
CONFIGMAPS = _core("configmaps", "ConfigMap", True)
SECRETS = _core("secrets", "Secret", True)
EVENTS = _core("events", "Event", True)
PERSISTENTVOLUMES = _core("persistentvolumes", "PersistentVolume", False)
PERSISTENTVOLUMECLAIMS = _core("persistentvolumeclaims", "PersistentVolumeClaim", True)
SERVICEACCOUNTS = _core("serviceaccounts", "ServiceAccount", True)
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment", True)
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet", True)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True)

#: Every resource the API server serves, in the order of its table: what the garbage collector
#: watches and what the namespace controller empties a namespace of.
SERVED: tuple[Resource, ...] = (
    NAMESPACES, PODS, NODES, SERVICES, ENDPOINTS, CONFIGMAPS, SECRETS, EVENTS, PERSISTENTVOLUMES,
    PERSISTENTVOLUMECLAIMS, SERVICEACCOUNTS, DEPLOYMENTS, REPLICASETS, LEASES, ENDPOINTSLICES,
)
_BY_GROUP_KIND = {(r.group, r.kind): r for r in SERVED}


def for_kind(api_version: str, kind: str) -> Resource | None:
    """The served resource of objects of ``apiVersion`` and ``kind`` (an ownerReference's),
    or None. Group and kind decide, not the version, as Kubernetes' REST mapper does."""
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    return _BY_GROUP_KIND.get((group, kind))
