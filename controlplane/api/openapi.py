"""OpenAPI v3, as kubectl 1.32 reads it for ``--validate`` (server-side field validation) and
``explain``.

kubectl fetches the index at ``GET /openapi/v3`` (``{"paths": {"api/v1": {"serverRelativeURL":
"/openapi/v3/api/v1?hash=..."}}}``), then the document of the GroupVersion it needs, and looks
there for a PATCH operation carrying ``x-kubernetes-group-version-kind`` = the object's GVK
with a ``fieldValidation`` query parameter *among the operation's own parameters* (client-go
``supportsQueryParamV3``); without it, ``kubectl apply`` fails unless ``--validate=false``.
So every PATCH (of an object and of its ``status``) lists ``fieldValidation``.

Flow, in the order of the code: ``index`` lists every document with the SHA-512 of its bytes
(uppercase hex, as kube-openapi's ETag); ``document_for_path`` / ``document`` serve the cached
JSON; ``_build`` makes one document: ``_Paths`` adds, per row of the resource table
(``resources.RESOURCES``), the collection, item and subresource operations, and
``_components`` turns every type reachable from those operations' ``$ref``s into a schema,
reading the type schema of ``schema.types()``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from . import schema
from .resources import RESOURCES, ResourceType, group_versions

Json = dict[str, Any]

OPENAPI_VERSION = "3.0.0"
REF_PREFIX = "#/components/schemas/"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
STATUS = f"{META}.Status"
DELETE_OPTIONS = f"{META}.DeleteOptions"
PATCH = f"{META}.Patch"
SCALE = "io.k8s.api.autoscaling.v1.Scale"
BINDING = "io.k8s.api.core.v1.Binding"
EVICTION = "io.k8s.api.policy.v1.Eviction"
RESPONSE_TYPES = ("application/json", "application/yaml")
LIST_RESPONSE_TYPES = ("application/json", "application/json;stream=watch", "application/yaml")
PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json",
               "application/merge-patch+json", "application/strategic-merge-patch+json")
#: Schemas that are not models of the client: the body of a PATCH is free-form.
EXTRA_SCHEMAS: dict[str, Json] = {
    PATCH: {"description": "Patch is provided to give a concrete name and type to the "
                           "Kubernetes PATCH request body.", "type": "object"},
}
#: The pattern controller-gen gives resource.Quantity.
QUANTITY_PATTERN = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def index() -> Json:
    """``GET /openapi/v3``: every document and the URL that names its current content."""
    return {"paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={etag(doc)}"}
                      for path, doc in _documents().items()}}


def document(group: str, version: str) -> bytes | None:
    """``GET /openapi/v3/api/v1`` or ``/openapi/v3/apis/<group>/<version>``; None if not served."""
    return _documents().get(_gv_path(group, version))


def document_for_path(path: str) -> bytes | None:
    """The document at ``/openapi/v3/<path>``: the keys of ``index()`` (``api``, ``apis``,
    ``api/v1``, ``apis/apps/v1``...)."""
    return _documents().get(path.strip("/"))


def etag(data: bytes) -> str:
    """kube-openapi's ETag and ``hash`` parameter: the SHA-512 of the body, uppercase hex."""
    return hashlib.sha512(data).hexdigest().upper()


@functools.cache
def _documents() -> dict[str, bytes]:
    docs = {"api": _discovery_document("/api/", "getCoreAPIVersions", f"{META}.APIVersions",
                                       "core"),
            "apis": _discovery_document("/apis/", "getAPIVersions", f"{META}.APIGroupList",
                                        "apis")}
    for group, version in group_versions():
        rows = [r for r in RESOURCES if (r.group, r.version) == (group, version)]
        docs[_gv_path(group, version)] = _serialize(_build(group, version, rows))
    return docs


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _serialize(doc: Json) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _discovery_document(url: str, operation_id: str, response: str, tag: str) -> bytes:
    op = {"description": "get available API versions", "operationId": operation_id,
          "responses": _responses({"200": response}), "tags": [tag]}
    return _serialize(_document({url: {"get": op}}, [response]))


def _document(paths: Json, roots: list[str]) -> Json:
    return {"openapi": OPENAPI_VERSION, "info": {"title": "Kubernetes", "version": "unversioned"},
            "paths": paths, "components": {"schemas": _components(roots)}}


def _build(group: str, version: str, rows: list[ResourceType]) -> Json:
    paths = _Paths(group, version)
    for rt in rows:
        paths.add_resource(rt)
    return _document(paths.paths, sorted(paths.refs))


# ------------------------------------------------------------------------------ paths

def _param(name: str, kind: str, description: str, where: str = "query") -> Json:
    param: Json = {"name": name, "in": where, "description": description,
                   "schema": {"type": kind, "uniqueItems": True}}
    if where == "path":
        param["required"] = True
    return param


P_PRETTY = _param("pretty", "string", "If 'true', then the output is pretty printed.")
P_DRY_RUN = _param("dryRun", "string", "When present, indicates that modifications should not be "
                   "persisted. Valid values are: - All: all dry run stages will be processed")
P_FIELD_MANAGER = _param("fieldManager", "string", "fieldManager is a name associated with the "
                         "actor or entity that is making these changes.")
P_FIELD_VALIDATION = _param(
    "fieldValidation", "string", "fieldValidation determines how the server should respond to "
    "unknown/duplicate fields in the object in the request. Valid values are: - Ignore: ignores "
    "unknown/duplicate fields. - Warn: responds with a warning for each unknown/duplicate field, "
    "but successfully serves the request. - Strict: fails the request on unknown/duplicate fields.")
P_FORCE = _param("force", "boolean", "Force is going to \"force\" Apply requests. It means user "
                 "will re-acquire conflicting fields owned by other people.")
P_LIST = [
    _param("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type "
           "\"BOOKMARK\"."),
    _param("continue", "string", "The continue option should be set when retrieving more results "
           "from the server."),
    _param("fieldSelector", "string", "A selector to restrict the list of returned objects by "
           "their fields. Defaults to everything."),
    _param("labelSelector", "string", "A selector to restrict the list of returned objects by "
           "their labels. Defaults to everything."),
    _param("limit", "integer", "limit is a maximum number of responses to return for a list call."),
    _param("resourceVersion", "string", "resourceVersion sets a constraint on what resource "
           "versions a request may be served from."),
    _param("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion "
           "is applied to list calls."),
    _param("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with "
           "`watch=true`."),
    _param("timeoutSeconds", "integer", "Timeout for the list/watch call."),
    _param("watch", "boolean", "Watch for changes to the described resources and return them as "
           "a stream of add, update, and remove notifications. Specify resourceVersion."),
]
P_DELETE = [
    P_DRY_RUN,
    _param("gracePeriodSeconds", "integer", "The duration in seconds before the object should be "
           "deleted."),
    _param("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy."),
    _param("propagationPolicy", "string", "Whether and how garbage collection will be performed."),
]
P_LOG = [
    _param("container", "string", "The container for which to stream logs."),
    _param("follow", "boolean", "Follow the log stream of the pod."),
    _param("limitBytes", "integer", "If set, the number of bytes to read from the server before "
           "terminating the log output."),
    _param("previous", "boolean", "Return previous terminated container logs."),
    _param("sinceSeconds", "integer", "A relative time in seconds before the current time from "
           "which to show logs."),
    _param("tailLines", "integer", "If set, the number of lines from the end of the logs to "
           "show."),
    _param("timestamps", "boolean", "If true, add an RFC3339 timestamp at the beginning of every "
           "line of log output."),
]
_P_STREAMS = [
    _param("stderr", "boolean", "Redirect the standard error stream of the pod for this call."),
    _param("stdin", "boolean", "Redirect the standard input stream of the pod for this call."),
    _param("stdout", "boolean", "Redirect the standard output stream of the pod for this call."),
    _param("tty", "boolean", "TTY if true indicates that a tty will be allocated for the "
           "exec call."),
]
P_ATTACH = [_param("container", "string", "The container in which to execute the command. "
                   "Defaults to only container if there is only one container in the pod."),
            *_P_STREAMS]
P_EXEC = [_param("command", "string", "Command is the remote command to execute. argv array. "
                 "Not executed within a shell."), *P_ATTACH]
P_WRITE = [P_DRY_RUN, P_FIELD_MANAGER, P_FIELD_VALIDATION]
P_PATCH = [P_DRY_RUN, P_FIELD_MANAGER, P_FIELD_VALIDATION, P_FORCE]


def _ref(name: str) -> Json:
    return {"$ref": REF_PREFIX + name}


def _content(types: tuple[str, ...], schema_: Json) -> Json:
    return {t: {"schema": schema_} for t in types}


def _responses(codes: Mapping[str, str], types: tuple[str, ...] = RESPONSE_TYPES) -> Json:
    names = {"200": "OK", "201": "Created", "202": "Accepted"}
    return {code: {"description": names[code], "content": _content(types, _ref(name))}
            for code, name in codes.items()}


class _Paths:
    """The ``paths`` of one GroupVersion's document, and every schema they refer to."""

    def __init__(self, group: str, version: str) -> None:
        self.group, self.version = group, version
        self.prefix = "/" + _gv_path(group, version)
        # "coordination.k8s.io" -> "CoordinationV1", "" -> "CoreV1", as Kubernetes' op ids.
        self.id_part = (group.split(".")[0] or "core").capitalize() + version.capitalize()
        self.tag = f"{(group.split('.')[0] or 'core')}_{version}"
        self.paths: Json = {}
        self.refs: set[str] = {STATUS}
        self.paths[self.prefix + "/"] = {"get": {
            "description": "get available resources",
            "operationId": f"get{self.id_part}APIResources",
            "responses": self._responses({"200": f"{META}.APIResourceList"}), "tags": [self.tag]}}

    def add_resource(self, rt: ResourceType) -> None:
        kind_gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        scope = "Namespaced" if rt.namespaced else ""
        base = f"{self.prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced \
            else f"{self.prefix}/{rt.plural}"
        scope_params = [_param("namespace", "string", "object name and auth scope, such as for "
                               "teams and projects", "path")] if rt.namespaced else []
        item_params = [_param("name", "string", f"name of the {rt.kind}", "path"), *scope_params,
                       P_PRETTY]
        kind, verbs = rt.kind, set(rt.verbs)

        collection: Json = {}
        if "list" in verbs:
            collection["get"] = self._op("list", f"list {kind}", f"list{self.id_part}{scope}{kind}",
                                         kind_gvk, P_LIST, responses={"200": rt.schema + "List"},
                                         response_types=LIST_RESPONSE_TYPES)
        if "create" in verbs:
            collection["post"] = self._op("post", f"create a {kind}",
                                          f"create{self.id_part}{scope}{kind}", kind_gvk, P_WRITE,
                                          body=rt.schema, responses=dict.fromkeys(
                                              ("200", "201", "202"), rt.schema))
        if "deletecollection" in verbs:
            collection["delete"] = self._op(
                "deletecollection", f"delete collection of {kind}",
                f"delete{self.id_part}Collection{scope}{kind}", kind_gvk,
                [*P_DELETE, *P_LIST[1:-1]],
                body=DELETE_OPTIONS, responses={"200": STATUS})
        if collection:
            self.paths[base] = {**collection, "parameters": [*scope_params, P_PRETTY]}
        if rt.namespaced and "list" in verbs:
            self.paths[f"{self.prefix}/{rt.plural}"] = {
                "get": self._op("list", f"list {kind}", f"list{self.id_part}{kind}ForAllNamespaces",
                                kind_gvk, P_LIST, responses={"200": rt.schema + "List"},
                                response_types=LIST_RESPONSE_TYPES),
                "parameters": [P_PRETTY]}

        item: Json = {}
        op_id = f"{self.id_part}{scope}{kind}"
        if "get" in verbs:
            item["get"] = self._op("get", f"read the specified {kind}", "read" + op_id, kind_gvk,
                                   [], responses={"200": rt.schema})
        if "update" in verbs:
            item["put"] = self._op("put", f"replace the specified {kind}", "replace" + op_id,
                                   kind_gvk, P_WRITE, body=rt.schema,
                                   responses=dict.fromkeys(("200", "201"), rt.schema))
        if "patch" in verbs:
            item["patch"] = self._patch(f"partially update the specified {kind}", "patch" + op_id,
                                        kind_gvk, rt.schema)
        if "delete" in verbs:
            item["delete"] = self._op("delete", f"delete a {kind}", "delete" + op_id, kind_gvk,
                                      P_DELETE, body=DELETE_OPTIONS,
                                      responses=dict.fromkeys(("200", "202"), STATUS))
        if item:
            self.paths[base + "/{name}"] = {**item, "parameters": item_params}
        for sub in rt.subresources:
            self._add_subresource(rt, sub, f"{base}/{{name}}/{sub}", op_id, kind_gvk, item_params)

    def _add_subresource(self, rt: ResourceType, sub: str, path: str, op_id: str,
                         kind_gvk: Json, params: list[Json]) -> None:
        """status and scale: get/replace/patch; binding and eviction: create; finalize:
        replace; log: read; exec and attach: connect by GET or POST (a WebSocket upgrade)."""
        ops: Json = {}
        what = f"{sub} of the specified {rt.kind}"
        if sub in ("status", "scale"):
            body, gvk = (rt.schema, kind_gvk) if sub == "status" else (
                SCALE, {"group": "autoscaling", "version": "v1", "kind": "Scale"})
            suffix = sub.capitalize()
            ops["get"] = self._op("get", f"read {what}", f"read{op_id}{suffix}", gvk, [],
                                  responses={"200": body})
            ops["put"] = self._op("put", f"replace {what}", f"replace{op_id}{suffix}", gvk,
                                  P_WRITE, body=body, responses=dict.fromkeys(("200", "201"), body))
            ops["patch"] = self._patch(f"partially update {what}", f"patch{op_id}{suffix}", gvk,
                                       body)
        elif sub in ("binding", "eviction"):
            body, gvk = (BINDING, {"group": "", "version": "v1", "kind": "Binding"}) \
                if sub == "binding" else (EVICTION, {"group": "policy", "version": "v1",
                                                     "kind": "Eviction"})
            ops["post"] = self._op("post", f"create {sub} of a {rt.kind}",
                                   f"create{op_id}{sub.capitalize()}", gvk, P_WRITE, body=body,
                                   responses=dict.fromkeys(("200", "201", "202"), body))
        elif sub == "finalize":
            ops["put"] = self._op("put", f"replace finalize of the specified {rt.kind}",
                                  f"replace{op_id}Finalize", kind_gvk, P_WRITE, body=rt.schema,
                                  responses=dict.fromkeys(("200", "201"), rt.schema))
        elif sub == "log":
            op = self._op("get", f"read log of the specified {rt.kind}", f"read{op_id}Log",
                          kind_gvk, P_LOG, responses={})
            op["responses"] = {"200": {"description": "OK", "content": {
                "text/plain": {"schema": {"type": "string"}}}}}
            ops["get"] = op
        elif sub in ("exec", "attach"):
            kind = "PodExecOptions" if sub == "exec" else "PodAttachOptions"
            gvk = {"group": "", "version": "v1", "kind": kind}
            rest = op_id[len(self.id_part):]  # "NamespacedPod"
            for method in ("get", "post"):
                op = self._op("connect", f"connect {method.upper()} requests to {sub} of {rt.kind}",
                              f"connect{self.id_part}{method.capitalize()}{rest}"
                              f"{sub.capitalize()}", gvk,
                              P_EXEC if sub == "exec" else P_ATTACH, responses={})
                op["responses"] = {"200": {"description": "OK", "content": {
                    "*/*": {"schema": {"type": "string"}}}}}
                ops[method] = op
        else:
            raise ValueError(f"no OpenAPI shape for subresource {sub!r} of {rt.plural}")
        self.paths[path] = {**ops, "parameters": params}

    def _patch(self, description: str, operation_id: str, gvk: Json, schema_name: str) -> Json:
        op = self._op("patch", description, operation_id, gvk, P_PATCH, responses=dict.fromkeys(
            ("200", "201"), schema_name))
        op["requestBody"] = {"required": True, "content": _content(PATCH_TYPES, _ref(PATCH))}
        self.refs.add(PATCH)
        return op

    def _op(self, action: str, description: str, operation_id: str, gvk: Json,
            params: list[Json], *, responses: Mapping[str, str], body: str = "",
            response_types: tuple[str, ...] = RESPONSE_TYPES) -> Json:
        op: Json = {"description": description, "operationId": operation_id,
                    "responses": self._responses(responses, response_types), "tags": [self.tag],
                    "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk}
        if params:
            op["parameters"] = list(params)
        if body:
            op["requestBody"] = {"required": True, "content": _content(("*/*",), _ref(body))}
            self.refs.add(body)
        return op

    def _responses(self, codes: Mapping[str, str],
                   types: tuple[str, ...] = RESPONSE_TYPES) -> Json:
        self.refs.update(codes.values())
        return _responses(codes, types)


# ------------------------------------------------------------------------------ schemas

def _components(roots: list[str]) -> Json:
    """The schema of every type reachable from ``roots``, sorted by name."""
    types = schema.types()
    out: Json = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in out:
            continue
        if name in EXTRA_SCHEMAS:
            out[name] = EXTRA_SCHEMAS[name]
            continue
        out[name] = _type_schema(types[name], pending)
    return dict(sorted(out.items()))


def _type_schema(entry: Mapping[str, Any], pending: list[str]) -> Json:
    """One component schema; the types it refers to go onto ``pending``."""
    description = entry.get("description", "")
    scalar = entry.get("scalar")
    if scalar == "date-time":
        return {"description": description, "type": "string", "format": "date-time"}
    if scalar == "object":
        return {"description": description, "type": "object"}
    if scalar in ("int-or-string", "quantity"):
        out: Json = {"description": description, "x-kubernetes-int-or-string": True,
                     "anyOf": [{"type": "integer"}, {"type": "string"}]}
        if scalar == "quantity":
            out["pattern"] = QUANTITY_PATTERN
        else:
            out["format"] = "int-or-string"
        return out
    docs = entry.get("docs", {})
    patch = entry.get("patch", {})
    properties: Json = {}
    for field, expr in entry["properties"].items():
        prop = _expr_schema(expr, pending)
        if field in docs:
            # OpenAPI 3.0 ignores siblings of "$ref": wrap it, as Kubernetes does.
            prop = {"allOf": [prop]} if "$ref" in prop else prop
            prop["description"] = docs[field]
        if field in patch:
            strategy, key = patch[field]
            prop["x-kubernetes-patch-strategy"] = strategy
            if key:
                prop["x-kubernetes-patch-merge-key"] = key
        properties[field] = prop
    out = {"description": description, "type": "object", "properties": properties}
    if entry.get("required"):
        out["required"] = list(entry["required"])
    if entry.get("gvk"):
        out["x-kubernetes-group-version-kind"] = list(entry["gvk"])
    return out


_PRIMITIVE_SCHEMAS: dict[str, Json] = {
    "string": {"type": "string"}, "boolean": {"type": "boolean"},
    "int32": {"type": "integer", "format": "int32"},
    "int64": {"type": "integer", "format": "int64"},
    "double": {"type": "number", "format": "double"}, "byte": {"type": "string", "format": "byte"},
}


def _expr_schema(expr: str, pending: list[str]) -> Json:
    if expr.startswith("[]"):
        return {"type": "array", "items": _expr_schema(expr[2:], pending)}
    if expr.startswith("{}"):
        return {"type": "object", "additionalProperties": _expr_schema(expr[2:], pending)}
    if expr in _PRIMITIVE_SCHEMAS:
        return dict(_PRIMITIVE_SCHEMAS[expr])
    pending.append(expr)
    return _ref(expr)
