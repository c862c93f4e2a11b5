"""How the lists and maps of our kinds merge: strategic-merge-patch and server-side-apply metadata.

Kubernetes keeps this in the Go types as tags: ``patchStrategy``/``patchMergeKey`` for
strategic merge patch (``x-kubernetes-patch-strategy``/``-merge-key`` in OpenAPI) and
``+listType``/``+listMapKey``/``+structType``/``+mapType`` for server-side apply
(``x-kubernetes-list-type``/``-list-map-keys``/``-map-type``). The two mostly agree, but not
always: Service ports merge by ``port`` in a patch yet are keyed by ``(port, protocol)`` in
apply; ``PodStatus.hostIPs`` merges by ``ip`` in a patch but is atomic in apply; tolerations are
replaced by both. One ``ListType`` carries both answers.

Flow, in the order of the code:

1. ``ListType`` and ``Schema``: one list's semantics; a tree node per field path.
2. Small tables, one per Go type (ObjectMeta, Container, PodSpec, PodStatus, ...), as
   ``"dotted.path": Spec``; list indexes are omitted from paths, so ``containers.ports`` is the
   ports of every container.
3. ``_KINDS`` composes the tables under their prefixes (PodSpec under ``spec`` for a Pod, under
   ``spec.template.spec`` for Deployments and ReplicaSets).
4. ``schema(group, kind)`` builds (once, cached) the tree the patch and apply walkers descend
   alongside the data; ``list_type``/``patch_strategy`` answer for one path.

Anything not in a table has the Kubernetes default: maps merge key by key, lists are atomic
(replaced by a patch, owned as a whole by apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: ``x-kubernetes-list-type`` values.
ATOMIC = "atomic"
SET = "set"
MAP = "map"


@dataclass(frozen=True, slots=True)
class ListType:
    """One list field: its strategic-merge-patch strategy and its server-side-apply type."""

    #: ``patchMergeKey``: the field that identifies an element in a strategic merge patch.
    merge_key: str = ""
    #: ``patchStrategy`` contains ``merge``: a patch merges the list instead of replacing it.
    merge: bool = False
    #: ``patchStrategy`` contains ``retainKeys`` (clients send ``$retainKeys`` for elements).
    retain_keys: bool = False
    #: ``x-kubernetes-list-type``: "map" (associative, by ``map_keys``), "set" or "atomic".
    list_type: str = ATOMIC
    map_keys: tuple[str, ...] = ()
    #: Defaults of key fields an element may omit (``protocol`` of ports is TCP).
    key_defaults: tuple[tuple[str, Any], ...] = ()

    @property
    def patch_strategy(self) -> str | None:
        """The merge key, "merge" for a set of primitives, None when a patch replaces it."""
        if not self.merge:
            return None
        return self.merge_key or "merge"


#: Lists without tags: replaced by a patch, owned as a whole by apply.
ATOMIC_LIST = ListType()


@dataclass(frozen=True, slots=True)
class Spec:
    """What a table says about one field path."""

    list: ListType | None = None
    #: ``+structType=atomic``/``+mapType=atomic``: apply replaces and owns the map as a whole.
    atomic: bool = False
    #: A Go non-pointer struct or a list without ``omitempty``: Kubernetes' empty object already
    #: has it, so an update that fills it in never owns the field itself (no ``.`` entry).
    always_present: bool = False


@dataclass(eq=False, slots=True)
class Schema:
    """A node of the merge-metadata tree; a list field's node describes its elements' fields."""

    fields: dict[str, Schema] = field(default_factory=dict)
    list: ListType | None = None
    atomic: bool = False
    always_present: bool = False

    def child(self, name: str) -> Schema:
        return self.fields.get(name, EMPTY)


#: The node of every path no table mentions.
EMPTY = Schema()


def _keyed(key: str, *more_keys: str, retain: bool = False,
           defaults: tuple[tuple[str, Any], ...] = (), present: bool = False) -> Spec:
    """A list merged by ``key`` in a patch and keyed by ``key`` (+ ``more_keys``) in apply."""
    return Spec(list=ListType(key, True, retain, MAP, (key, *more_keys), defaults),
                always_present=present)


_STRUCT_ATOMIC = Spec(atomic=True)
_LIST_ATOMIC = Spec(list=ATOMIC_LIST)
_PRESENT = Spec(always_present=True)
#: ``patchStrategy=merge`` on a list of strings, ``listType=set``: finalizers, podCIDRs.
_PRIMITIVE_SET = Spec(list=ListType(merge=True, list_type=SET))
_TCP = (("protocol", "TCP"),)

Table = dict[str, Spec]


def _under(prefix: str, table: Table) -> Table:
    return {f"{prefix}.{path}": spec for path, spec in table.items()}


OBJECT_META: Table = {
    "finalizers": _PRIMITIVE_SET,
    "ownerReferences": _keyed("uid"),
    "managedFields": _LIST_ATOMIC,
}

CONTAINER: Table = {
    "ports": _keyed("containerPort", "protocol", defaults=_TCP),
    "env": _keyed("name"),
    "env.valueFrom.configMapKeyRef": _STRUCT_ATOMIC,
    "env.valueFrom.secretKeyRef": _STRUCT_ATOMIC,
    "env.valueFrom.fieldRef": _STRUCT_ATOMIC,
    "env.valueFrom.resourceFieldRef": _STRUCT_ATOMIC,
    "envFrom": _LIST_ATOMIC,
    "volumeMounts": _keyed("mountPath"),
    "volumeDevices": _keyed("devicePath"),
    "resizePolicy": _LIST_ATOMIC,
    "resources.claims": Spec(list=ListType(list_type=MAP, map_keys=("name",))),
    "command": _LIST_ATOMIC,
    "args": _LIST_ATOMIC,
}

POD_SPEC: Table = {
    "volumes": _keyed("name", retain=True),
    "containers": _keyed("name", present=True),
    **_under("containers", CONTAINER),
    "initContainers": _keyed("name"),
    **_under("initContainers", CONTAINER),
    "ephemeralContainers": _keyed("name"),
    **_under("ephemeralContainers", CONTAINER),
    "imagePullSecrets": _keyed("name"),
    "hostAliases": _keyed("ip"),
    "tolerations": _LIST_ATOMIC,
    "readinessGates": _LIST_ATOMIC,
    "topologySpreadConstraints": _keyed("topologyKey", "whenUnsatisfiable"),
    "topologySpreadConstraints.labelSelector": _STRUCT_ATOMIC,
    "resourceClaims": _keyed("name", retain=True),
    "schedulingGates": _keyed("name"),
    "nodeSelector": _STRUCT_ATOMIC,
    "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution": _STRUCT_ATOMIC,
}

POD_STATUS: Table = {
    "conditions": _keyed("type"),
    "podIPs": _keyed("ip"),
    "hostIPs": Spec(list=ListType("ip", True)),
    "containerStatuses": _LIST_ATOMIC,
    "initContainerStatuses": _LIST_ATOMIC,
    "ephemeralContainerStatuses": _LIST_ATOMIC,
    "resourceClaimStatuses": _keyed("name", retain=True),
}

POD_TEMPLATE: Table = {
    "metadata": _PRESENT,
    **_under("metadata", OBJECT_META),
    "spec": _PRESENT,
    **_under("spec", POD_SPEC),
}

CONDITIONS: Table = {"conditions": _keyed("type")}

#: Tables of each kind beyond ``metadata`` (every kind gets ObjectMeta and top-level structs).
_KINDS: dict[tuple[str, str], Table] = {
    ("", "Namespace"): {"spec.finalizers": _LIST_ATOMIC, **_under("status", CONDITIONS)},
    ("", "Pod"): {**_under("spec", POD_SPEC), **_under("status", POD_STATUS)},
    ("", "Node"): {
        "spec.podCIDRs": _PRIMITIVE_SET,
        "spec.taints": _LIST_ATOMIC,
        "status.conditions": _keyed("type"),
        "status.addresses": _keyed("type"),
        "status.images": _LIST_ATOMIC,
        "status.volumesInUse": _LIST_ATOMIC,
        "status.volumesAttached": _LIST_ATOMIC,
        "status.nodeInfo": _PRESENT,
        "status.daemonEndpoints": _PRESENT,
    },
    ("", "Service"): {
        "spec.ports": _keyed("port", "protocol", defaults=_TCP),
        "spec.selector": _STRUCT_ATOMIC,
        "spec.clusterIPs": _LIST_ATOMIC,
        "spec.externalIPs": _LIST_ATOMIC,
        "spec.ipFamilies": _LIST_ATOMIC,
        "spec.loadBalancerSourceRanges": _LIST_ATOMIC,
        "status.loadBalancer": _PRESENT,
        "status.loadBalancer.ingress": _LIST_ATOMIC,
        **_under("status", CONDITIONS),
    },
    ("", "Endpoints"): {"subsets": _LIST_ATOMIC},
    ("", "ConfigMap"): {},
    ("", "Secret"): {},
    ("", "Event"): {
        "involvedObject": Spec(atomic=True, always_present=True),
        "related": _STRUCT_ATOMIC,
        "source": _PRESENT,
    },
    ("", "PersistentVolume"): {
        "spec.claimRef": _STRUCT_ATOMIC,
        "spec.accessModes": _LIST_ATOMIC,
        "spec.mountOptions": _LIST_ATOMIC,
        "spec.nodeAffinity.required": _STRUCT_ATOMIC,
    },
    ("", "PersistentVolumeClaim"): {
        "spec.selector": _STRUCT_ATOMIC,
        "spec.dataSource": _STRUCT_ATOMIC,
        "spec.accessModes": _LIST_ATOMIC,
        "status.accessModes": _LIST_ATOMIC,
        **_under("status", CONDITIONS),
    },
    ("", "ServiceAccount"): {"secrets": _keyed("name"), "imagePullSecrets": _LIST_ATOMIC},
    ("apps", "Deployment"): {
        "spec.selector": _STRUCT_ATOMIC,
        "spec.strategy": _PRESENT,
        "spec.template": _PRESENT,
        **_under("spec.template", POD_TEMPLATE),
        **_under("status", CONDITIONS),
    },
    ("apps", "ReplicaSet"): {
        "spec.selector": _STRUCT_ATOMIC,
        "spec.template": _PRESENT,
        **_under("spec.template", POD_TEMPLATE),
        **_under("status", CONDITIONS),
    },
    ("coordination.k8s.io", "Lease"): {},
    ("discovery.k8s.io", "EndpointSlice"): {"endpoints": _LIST_ATOMIC, "ports": _LIST_ATOMIC},
}

_COMMON: Table = {
    "metadata": _PRESENT,
    **_under("metadata", OBJECT_META),
    "spec": _PRESENT,
    "status": _PRESENT,
}


@lru_cache(maxsize=None)
def schema(group: str, kind: str) -> Schema:
    """The merge-metadata tree of a kind; kinds we do not know get ObjectMeta's only."""
    root = Schema()
    for path, spec in {**_COMMON, **_KINDS.get((group, kind), {})}.items():
        node = root
        for name in path.split("."):
            node = node.fields.setdefault(name, Schema())
        node.list = spec.list or node.list
        node.atomic = spec.atomic or node.atomic
        node.always_present = spec.always_present or node.always_present
    return root


def node(group: str, kind: str, path: tuple[str, ...]) -> Schema:
    """The tree node of a field path (JSON field names, list indexes omitted)."""
    current = schema(group, kind)
    for name in path:
        current = current.child(name)
    return current


def list_type(group: str, kind: str, path: tuple[str, ...]) -> ListType:
    """The semantics of the list at ``path``; untagged lists are atomic."""
    return node(group, kind, path).list or ATOMIC_LIST


def patch_strategy(group: str, kind: str, path: tuple[str, ...]) -> str | None:
    """Strategic merge patch of the list at ``path``: merge key, "merge" (primitives) or None."""
    return list_type(group, kind, path).patch_strategy
