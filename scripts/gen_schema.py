#!/usr/bin/env python3
"""Generate ``controlplane/api/schema_data/k8s-types.json``: the type schema of Corral's kinds.

The facts come from the ``kubernetes`` Python client's generated models (not a runtime
dependency of Corral): each ``V1Foo`` class carries ``openapi_types`` (attribute -> client type
string), ``attribute_map`` (attribute -> JSON name) and pydantic ``model_fields`` (which know
the required ones). The client loses a few things on the way from the Kubernetes OpenAPI
document, so this script puts them back from small tables, each a fact of the Kubernetes API:

1. ``ROOTS`` lists the top-level kinds with their group/version/kind; the walk follows
   ``openapi_types`` from them and collects every reachable model.
2. ``openapi_name`` turns a client class name into the Kubernetes OpenAPI name: the client
   drops the Go package, so ``PACKAGES`` says which short names live in apimachinery meta/v1,
   apps, coordination, discovery, autoscaling or policy; everything else is core/v1.
3. ``type_expr`` turns a client type string into a type expression of the data file:
   ``string``, ``int32``, ``int64``, ``boolean``, ``double``, ``byte`` (base64 []byte),
   ``[]X`` (list), ``{}X`` (map with string keys) or an OpenAPI type name. Here the lost
   types come back: IntOrString (the client says ``object`` with an int|str annotation),
   Quantity (``str``; ``QUANTITY_*``), Time vs MicroTime (``datetime``; ``MICRO_TIME``),
   FieldsV1 (``object``), int64 vs int32 (``int``; ``INT64_FIELDS``).
4. ``EXTENSIONS`` adds Corral's own fields: the BlueGreen and Canary Deployment strategies
   (docs/deployment-strategies.md), as types of their own under ``dev.corral.apps.v1``.
5. ``PATCH_META`` adds ``x-kubernetes-patch-strategy``/``-merge-key`` for the lists whose
   strategic-merge semantics clients rely on.

Run ``python3 scripts/gen_schema.py``; ``--check`` exits 1 if the committed file is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import typing
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes.client.models as models

OUT = Path(__file__).resolve().parent.parent / "controlplane/api/schema_data/k8s-types.json"

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
TIME = f"{META}.Time"
MICRO_TIME = f"{META}.MicroTime"
FIELDS_V1 = f"{META}.FieldsV1"

#: (client class, group, version, kind): the kinds we serve, their lists, and the
#: request/response kinds of subresources and errors.
ROOTS: tuple[tuple[str, str, str, str], ...] = tuple(
    (cls, group, "v1", kind)
    for kinds, group in (
        (("Namespace", "Pod", "Node", "Service", "Endpoints", "ConfigMap", "Secret", "Event",
          "PersistentVolume", "PersistentVolumeClaim", "ServiceAccount"), ""),
        (("Deployment", "ReplicaSet"), "apps"),
        (("Lease",), "coordination.k8s.io"),
        (("EndpointSlice",), "discovery.k8s.io"),
    )
    for base in kinds
    for kind in (base, base + "List")
    for cls in (("CoreV1" if base == "Event" else "V1") + kind,)
) + (
    ("V1Scale", "autoscaling", "v1", "Scale"),
    ("V1Eviction", "policy", "v1", "Eviction"),
    ("V1Binding", "", "v1", "Binding"),
    ("V1Status", "", "v1", "Status"),
    ("V1DeleteOptions", "", "v1", "DeleteOptions"),
    ("V1APIVersions", "", "v1", "APIVersions"),
    ("V1APIGroupList", "", "v1", "APIGroupList"),
    ("V1APIGroup", "", "v1", "APIGroup"),
    ("V1APIResourceList", "", "v1", "APIResourceList"),
)

#: OpenAPI package of every short name that is not core/v1.
PACKAGES: dict[str, str] = {
    **{name: META for name in (
        "APIGroup", "APIGroupList", "APIResource", "APIResourceList", "APIVersions", "Condition",
        "DeleteOptions", "GroupVersionForDiscovery", "LabelSelector", "LabelSelectorRequirement",
        "ListMeta", "ManagedFieldsEntry", "ObjectMeta", "OwnerReference", "Preconditions",
        "ServerAddressByClientCIDR", "ShardInfo", "Status", "StatusCause", "StatusDetails",
    )},
    **{name: "io.k8s.api.apps.v1" for name in (
        "Deployment", "DeploymentList", "DeploymentSpec", "DeploymentStatus", "DeploymentStrategy",
        "DeploymentCondition", "RollingUpdateDeployment", "ReplicaSet", "ReplicaSetList",
        "ReplicaSetSpec", "ReplicaSetStatus", "ReplicaSetCondition",
    )},
    **{name: "io.k8s.api.coordination.v1" for name in ("Lease", "LeaseList", "LeaseSpec")},
    **{name: "io.k8s.api.discovery.v1" for name in (
        "EndpointSlice", "EndpointSliceList", "Endpoint", "EndpointConditions", "EndpointHints",
        "ForZone", "ForNode",
    )},
    **{name: "io.k8s.api.autoscaling.v1" for name in ("Scale", "ScaleSpec", "ScaleStatus")},
    "Eviction": "io.k8s.api.policy.v1",
}
CORE = "io.k8s.api.core.v1"

#: Maps of resource name -> Quantity (the client says ``Dict[str, str]``), by JSON field name.
QUANTITY_MAPS = frozenset({"limits", "requests", "capacity", "allocatable", "overhead",
                           "allocatedResources"})
#: Single Quantity fields (the client says ``str``): (type short name, JSON field name).
QUANTITY_FIELDS = frozenset({
    ("EmptyDirVolumeSource", "sizeLimit"), ("ResourceFieldSelector", "divisor"),
    ("NodeAllocatableMappedResources", "quantity"),
    ("NodeAllocatableOverheadResources", "perContainer"),
    ("NodeAllocatableOverheadResources", "perPod"),
})
#: metav1.MicroTime fields (the client says ``datetime`` for them and for metav1.Time).
MICRO_TIME_FIELDS = frozenset({
    ("Event", "eventTime"), ("EventSeries", "lastObservedTime"),
    ("LeaseSpec", "acquireTime"), ("LeaseSpec", "renewTime"),
})
#: int64 fields by JSON name (the client says ``int``; everything else is int32).
INT64_FIELDS = frozenset({
    "generation", "observedGeneration", "deletionGracePeriodSeconds", "gracePeriodSeconds",
    "remainingItemCount", "activeDeadlineSeconds", "terminationGracePeriodSeconds", "seconds",
    "runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "uid", "gid",
    "tolerationSeconds", "sizeBytes", "expirationSeconds", "capacity", "user", "defaultUser",
})
#: Strategic-merge metadata: type short name -> {field: (patch strategy, merge key or "")}.
_CONTAINER_PATCH = {"ports": ("merge", "containerPort"), "env": ("merge", "name"),
                    "volumeMounts": ("merge", "mountPath"),
                    "volumeDevices": ("merge", "devicePath")}
_CONDITIONS = {"conditions": ("merge", "type")}
PATCH_META: dict[str, dict[str, tuple[str, str]]] = {
    "ObjectMeta": {"finalizers": ("merge", ""), "ownerReferences": ("merge", "uid")},
    "PodSpec": {
        "volumes": ("merge,retainKeys", "name"), "initContainers": ("merge", "name"),
        "containers": ("merge", "name"), "ephemeralContainers": ("merge", "name"),
        "imagePullSecrets": ("merge", "name"), "hostAliases": ("merge", "ip"),
        "topologySpreadConstraints": ("merge", "topologyKey"),
        "resourceClaims": ("merge,retainKeys", "name"), "schedulingGates": ("merge", "name"),
    },
    "Container": _CONTAINER_PATCH,
    "EphemeralContainer": _CONTAINER_PATCH,
    "PodStatus": {**_CONDITIONS, "podIPs": ("merge", "ip"), "hostIPs": ("merge", "ip")},
    "NodeSpec": {"podCIDRs": ("merge", "")},
    "NodeStatus": {**_CONDITIONS, "addresses": ("merge", "type")},
    "ServiceSpec": {"ports": ("merge", "port")},
    "ServiceStatus": _CONDITIONS,
    "ServiceAccount": {"secrets": ("merge", "name")},
    "NamespaceStatus": _CONDITIONS,
    "PersistentVolumeClaimStatus": _CONDITIONS,
    "DeploymentSpec": {"strategy": ("retainKeys", "")},
    "DeploymentStatus": _CONDITIONS,
    "ReplicaSetStatus": _CONDITIONS,
}

_CLASS = re.compile(r"^(CoreV1|DiscoveryV1|V1)([A-Z]\w*)$")
_LIST = re.compile(r"^List\[(.*)\]$")
_DICT = re.compile(r"^Dict\[str, (.*)\]$")
_PRIMITIVES = {"str": "string", "bool": "boolean", "float": "double", "bytes": "byte"}
_PARAGRAPH = re.compile(r"\s*\n\s*\n")
_SENTENCE = re.compile(r"(?<=[a-z0-9)\]\"'`])(?<!e\.g)(?<!i\.e)\.\s")


def openapi_name(cls_name: str) -> str:
    """``V1PodSpec`` -> ``io.k8s.api.core.v1.PodSpec``; ``V1ObjectMeta`` -> meta/v1."""
    m = _CLASS.match(cls_name)
    if not m:
        raise SystemExit(f"unexpected client model {cls_name!r}: extend openapi_name")
    short = m.group(2)
    if m.group(1) == "DiscoveryV1":  # the client's name for discovery/v1's EndpointPort
        return f"io.k8s.api.discovery.v1.{short}"
    return f"{PACKAGES.get(short, CORE)}.{short}"


def _union_members(annotation: Any) -> set[Any]:
    """``Optional[Union[Annotated[int, ...], Annotated[str, ...]]]`` -> ``{int, str}``."""
    members = set()
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated:
            arg = typing.get_args(arg)[0]
        members.add(arg)
    return members - {type(None)}


def short_name(name: str) -> str:
    return name.rsplit(".", 1)[1]


def description(text: str | None, *, sentence: bool = False) -> str:
    """The first paragraph (or sentence, for fields): enough for ``kubectl explain``, small."""
    if not text:
        return ""
    text = _PARAGRAPH.split(text.strip(), 1)[0].strip()
    if sentence:
        first = _SENTENCE.split(text, 1)
        if len(first) > 1:
            text = first[0] + "."
    return " ".join(text.split())


CORRAL_APPS = "dev.corral.apps.v1"
#: Corral's Deployment strategy extensions: (type name, entry) added to the schema, and the
#: fields they add to Kubernetes types. docs/deployment-strategies.md describes them.
EXTENSION_TYPES: dict[str, dict[str, Any]] = {
    f"{CORRAL_APPS}.BlueGreenStrategy": {
        "description": "BlueGreen brings the new ReplicaSet up fully beside the old one, then "
                       "switches the active Service's selector to it (Corral extension).",
        "properties": {"activeService": "string", "previewService": "string",
                       "autoPromotionEnabled": "boolean", "autoPromotionSeconds": "int32",
                       "scaleDownDelaySeconds": "int32"},
        "docs": {
            "activeService": "Name of the Service that selects the active (serving) side.",
            "previewService": "Name of a Service that selects the new side before promotion.",
            "autoPromotionEnabled": "Promote as soon as the new side is fully available "
                                    "(default true); otherwise wait for `kubectl rollout "
                                    "resume`.",
            "autoPromotionSeconds": "Seconds the new side must have been fully available "
                                    "before automatic promotion.",
            "scaleDownDelaySeconds": "Seconds the old side is kept after promotion, for an "
                                     "instant rollback (default 30).",
        },
        "required": ["activeService"],
    },
    f"{CORRAL_APPS}.CanaryStrategy": {
        "description": "Canary moves traffic to the new ReplicaSet in steps (Corral extension).",
        "properties": {"steps": f"[]{CORRAL_APPS}.CanaryStep"},
        "docs": {"steps": "setWeight and pause steps, in order; after the last one the new "
                          "ReplicaSet takes all replicas."},
    },
    f"{CORRAL_APPS}.CanaryStep": {
        "description": "One canary step: exactly one of setWeight and pause.",
        "properties": {"setWeight": "int32", "pause": f"{CORRAL_APPS}.CanaryPause"},
        "docs": {"setWeight": "Percentage (0-100) of the replicas that run the new template.",
                 "pause": "Wait: duration seconds, or without one until `kubectl rollout "
                          "resume`."},
    },
    f"{CORRAL_APPS}.CanaryPause": {
        "description": "A pause between canary steps.",
        "properties": {"duration": "int32"},
        "docs": {"duration": "Seconds to wait; absent: wait for `kubectl rollout resume`."},
    },
}
EXTENSION_FIELDS: dict[str, dict[str, str]] = {
    "io.k8s.api.apps.v1.DeploymentStrategy": {"blueGreen": f"{CORRAL_APPS}.BlueGreenStrategy",
                                              "canary": f"{CORRAL_APPS}.CanaryStrategy"},
}


class Walker:
    """Collects every model reachable from ``ROOTS`` as data-file type entries."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self.pending: list[str] = []

    def run(self) -> dict[str, dict[str, Any]]:
        for cls_name, group, version, kind in ROOTS:
            self.visit(cls_name)
            entry = self.types[openapi_name(cls_name)]
            entry.setdefault("gvk", []).append({"group": group, "version": version, "kind": kind})
        while self.pending:
            self.visit(self.pending.pop())
        self.types[QUANTITY] = {"scalar": "quantity", "description": "Quantity is a fixed-point "
                                "representation of a number: a string like 100m, 1Gi, or a number."}
        self.types[INT_OR_STRING] = {"scalar": "int-or-string", "description": "IntOrString is a "
                                     "type that can hold an int32 or a string."}
        self.types[TIME] = {"scalar": "date-time", "description": "Time is an RFC 3339 date and "
                            "time at second precision."}
        self.types[MICRO_TIME] = {"scalar": "date-time", "description": "MicroTime is an RFC 3339 "
                                  "date and time at microsecond precision."}
        self.types[FIELDS_V1] = {"scalar": "object", "description": "FieldsV1 stores a set of "
                                 "fields in a data structure like a Trie, in JSON format."}
        self.types.update(EXTENSION_TYPES)
        for name, fields in EXTENSION_FIELDS.items():
            self.types[name]["properties"].update(fields)
        return dict(sorted(self.types.items()))

    def visit(self, cls_name: str) -> None:
        name = openapi_name(cls_name)
        if name in self.types:
            return
        cls = getattr(models, cls_name)
        short = short_name(name)
        by_json = {f.serialization_alias or f.alias or attr: f
                   for attr, f in cls.model_fields.items()}
        props: dict[str, str] = {}
        docs: dict[str, str] = {}
        required: list[str] = []
        for attr, client_type in cls.openapi_types.items():
            field_name = cls.attribute_map[attr]
            field = by_json[field_name]
            props[field_name] = self.type_expr(short, field_name, client_type, field)
            if doc := description(field.description, sentence=True):
                docs[field_name] = doc
            if field.is_required():
                required.append(field_name)
        class_doc = (cls.__doc__ or "").split("Attributes:")[0]
        entry: dict[str, Any] = {"description": description(class_doc), "properties": props}
        if docs:
            entry["docs"] = docs
        if required:
            entry["required"] = required
        if patch := PATCH_META.get(short):
            entry["patch"] = {f: list(v) for f, v in patch.items()}
        self.types[name] = entry

    def type_expr(self, owner: str, field_name: str, client_type: str, field: Any) -> str:
        if m := _LIST.match(client_type):
            return "[]" + self.type_expr(owner, field_name, m.group(1), field)
        if m := _DICT.match(client_type):
            if m.group(1) == "str" and field_name in QUANTITY_MAPS:
                return "{}" + QUANTITY
            return "{}" + self.type_expr(owner, field_name, m.group(1), field)
        if client_type == "int":
            return "int64" if field_name in INT64_FIELDS else "int32"
        if client_type == "str" and (owner, field_name) in QUANTITY_FIELDS:
            return QUANTITY
        if client_type == "datetime":
            return MICRO_TIME if (owner, field_name) in MICRO_TIME_FIELDS else TIME
        if client_type == "object":
            if _union_members(field.annotation) == {int, str}:
                return INT_OR_STRING
            if field_name == "fieldsV1":
                return FIELDS_V1
            raise SystemExit(f"free-form object {owner}.{field_name}: name its type")
        if client_type in _PRIMITIVES:
            return _PRIMITIVES[client_type]
        if hasattr(models, client_type):
            self.pending.append(client_type)
            return openapi_name(client_type)
        raise SystemExit(f"unknown client type {client_type!r} at {owner}.{field_name}")


def generate() -> str:
    api_version = re.search(r"version of the OpenAPI document: (\S+)",
                            sys.modules[models.V1Pod.__module__].__doc__ or "")
    head = {
        "//": (f"Generated by scripts/gen_schema.py from the kubernetes Python client "
               f"{kubernetes.__version__} model metadata (openapi_types, attribute_map, required "
               f"fields; OpenAPI document {api_version.group(1) if api_version else 'unknown'}). "
               "Corral serves it as its Kubernetes 1.32-era API: fields newer than 1.32 decode "
               "rather than count as unknown. "
               "Do not edit: change the script and run `python3 scripts/gen_schema.py`."),
        "client": kubernetes.__version__,
    }
    # One type per line: compact, yet a regeneration diffs per type.
    lines = [f"{json.dumps(name)}:{json.dumps(entry, separators=(',', ':'))}"
             for name, entry in Walker().run().items()]
    return json.dumps(head, indent=0)[:-2] + ',\n"types":{\n' + ",\n".join(lines) + "\n}}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file is stale")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run python3 scripts/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
