"""Discovery documents, legacy and aggregated, built from the resource table.

kubectl 1.32 asks ``/api`` and ``/apis`` for the aggregated form first (one request for every
group); it accepts it only if the response's Content-Type is exactly the aggregated media type,
and otherwise falls back to the legacy documents (APIVersions, APIGroupList, one
APIResourceList per group-version). Both are served; the documents are computed once.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from .resources import RESOURCES, ResourceType, group_versions

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

#: Verbs of each subresource, as Kubernetes lists them.
_SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "binding": ("create",),
    "eviction": ("create",),
    "log": ("get",),
    "finalize": ("update",),
    # Connect subresources: a WebSocket upgrade by GET, or POST.
    "exec": ("create", "get"),
    "attach": ("create", "get"),
}
#: The kind a subresource answers with (group, version, kind); None: the parent's kind.
_SUBRESOURCE_KIND = {
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "eviction": ("policy", "v1", "Eviction"),
    "log": None,
    "exec": ("", "v1", "PodExecOptions"),
    "attach": ("", "v1", "PodAttachOptions"),
    "status": None,
    "finalize": None,
}


def _subresource_kind(rt: ResourceType, sub: str) -> tuple[str, str, str]:
    return _SUBRESOURCE_KIND.get(sub) or (rt.group, rt.version, rt.kind)


def _api_resources(group: str, version: str) -> list[dict[str, Any]]:
    """Legacy APIResourceList entries: each resource, then each ``resource/subresource``."""
    out: list[dict[str, Any]] = []
    for rt in RESOURCES:
        if (rt.group, rt.version) != (group, version):
            continue
        entry: dict[str, Any] = {
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        out.append(entry)
        for sub in rt.subresources:
            g, v, kind = _subresource_kind(rt, sub)
            sub_entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                "kind": kind, "verbs": list(_SUBRESOURCE_VERBS[sub]),
            }
            if g != rt.group or v != rt.version:
                sub_entry.update(group=g, version=v)
            out.append(sub_entry)
    return out


@cache
def resource_list(group: str, version: str) -> bytes | None:
    """``/api/v1`` or ``/apis/<group>/<version>``: an APIResourceList, or None if not served."""
    if (group, version) not in group_versions():
        return None
    gv = f"{group}/{version}" if group else version
    return _dump({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                  "resources": _api_resources(group, version)})


@cache
def api_versions() -> bytes:
    """``/api``: the legacy core group's versions."""
    return _dump({"kind": "APIVersions", "versions": ["v1"],
                  "serverAddressByClientCIDRs": [
                      {"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})


def _named_groups() -> list[str]:
    groups: list[str] = []
    for group, _ in group_versions():
        if group and group not in groups:
            groups.append(group)
    return groups


def _group_versions_of(group: str) -> list[str]:
    return [v for g, v in group_versions() if g == group]


@cache
def api_group_list() -> bytes:
    """``/apis``: every named group with its versions (APIGroupList)."""
    groups = []
    for group in _named_groups():
        versions = [{"groupVersion": f"{group}/{v}", "version": v}
                    for v in _group_versions_of(group)]
        groups.append({"name": group, "versions": versions, "preferredVersion": versions[0]})
    return _dump({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


@cache
def api_group(group: str) -> bytes | None:
    """``/apis/<group>``: one APIGroup."""
    if group not in _named_groups():
        return None
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in _group_versions_of(group)]
    return _dump({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                  "preferredVersion": versions[0]})


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if rt.subresources:
        entry["subresources"] = []
        for sub in rt.subresources:
            g, v, kind = _subresource_kind(rt, sub)
            entry["subresources"].append({
                "subresource": sub,
                "responseKind": {"group": g, "version": v, "kind": kind},
                "verbs": list(_SUBRESOURCE_VERBS[sub]),
            })
    return entry


@cache
def aggregated(legacy: bool, version: str = "v2") -> bytes:
    """The APIGroupDiscoveryList of ``/api`` (``legacy``) or ``/apis``."""
    groups = [""] if legacy else _named_groups()
    items = []
    for group in groups:
        versions = [{
            "version": v,
            "resources": [_aggregated_resource(rt) for rt in RESOURCES
                          if (rt.group, rt.version) == (group, v)],
            "freshness": "Current",
        } for v in _group_versions_of(group)]
        items.append({"metadata": {"name": group}, "versions": versions})
    return _dump({"kind": "APIGroupDiscoveryList",
                  "apiVersion": f"apidiscovery.k8s.io/{version}",
                  "metadata": {}, "items": items})


def wants_aggregated(accept: str) -> str | None:
    """The aggregated media type to answer with, if ``accept`` asks for one."""
    for part in accept.split(","):
        params = {k.strip(): v.strip() for k, _, v in
                  (p.partition("=") for p in part.split(";")[1:])}
        if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") == "v2":
                return AGGREGATED_V2
            if params.get("v") == "v2beta1":
                return AGGREGATED_V2BETA1
    return None


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
