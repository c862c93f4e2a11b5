"""Reading an API request: the URL into a resource target, the body, the query parameters.

Pure functions of the URL, headers and body, so the REST handlers only orchestrate. Resource
URLs follow Kubernetes::

    /api/v1[/watch][/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]
    /apis/{group}/{version}[/watch][/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]

``/api/v1/namespaces/{name}`` names a Namespace itself; every error is an ``ApiError``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from . import errors, schema
from .registry import DeleteOptions, ListOptions
from .resources import ResourceType, lookup
from .selectors import parse_field_selector, parse_label_selector

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
#: Patch media types and the registry's name for each.
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}
_YAML_TYPES = (YAML, "application/x-yaml", "text/yaml")
MAX_FIELD_MANAGER = 128
#: Largest request body accepted (Kubernetes' limit is 3 MiB).
MAX_BODY = 3 * 1024 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Target:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str
    name: str = ""
    subresource: str = ""
    #: The deprecated ``/watch/`` path form.
    watch_path: bool = False


def parse_target(path: str) -> Target | None:
    """The resource a URL path names, or None if it is not a resource URL."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch_path = bool(rest) and rest[0] == "watch"
    if watch_path:
        rest = rest[1:]
    namespace = ""
    namespaces = lookup("", version, "namespaces") if group == "" else None
    # /namespaces/{name}/status names a Namespace's subresource, not a collection in it.
    own_subresource = namespaces is not None and len(rest) == 3 and \
        rest[2] in namespaces.subresources
    if len(rest) >= 3 and rest[0] == "namespaces" and not own_subresource:
        namespace, rest = rest[1], rest[2:]
    elif rest[:1] == ["namespaces"] and group == "":
        rt = lookup("", version, "namespaces")
        if rt is None or len(rest) > 3:
            raise errors.not_found(group, "/".join(rest), "")
        return Target(rt, "", rest[1] if len(rest) > 1 else "",
                      rest[2] if len(rest) > 2 else "", watch_path)
    if not rest or len(rest) > 3:
        return None
    rt = lookup(group, version, rest[0])
    if rt is None:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource",
                              kind=rest[0], group=group)
    if namespace and not rt.namespaced:
        raise errors.not_found(group, rest[0], "")
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if sub and sub not in rt.subresources:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource",
                              kind=f"{rt.plural}/{sub}", group=group)
    return Target(rt, namespace, name, sub, watch_path)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_body(raw: bytes, content_type: str, *, allow_patch: bool = False) -> tuple[Any, str]:
    """The decoded body and its patch type ("" for a whole object)."""
    kind = media_type(content_type)
    patch_type = PATCH_TYPES.get(kind, "")
    if patch_type and not allow_patch:
        raise errors.unsupported_media_type(kind)
    if allow_patch and not patch_type:
        raise errors.unsupported_media_type(kind)
    if kind == PROTOBUF:
        raise errors.unsupported_media_type(kind)
    if not raw.strip():
        raise errors.bad_request("the request body is empty")
    try:
        if kind in _YAML_TYPES or patch_type == "apply":
            docs = [d for d in yaml.safe_load_all(raw) if d is not None]
            if len(docs) != 1:
                raise errors.bad_request(
                    f"the body must hold exactly one YAML document, not {len(docs)}")
            return _unicode_clean(docs[0], raw), patch_type
        if kind in (JSON, "") or patch_type:
            return _unicode_clean(json.loads(raw), raw), patch_type
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.bad_request(f"the body is not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise errors.bad_request(f"the body is not valid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise errors.bad_request("the body is nested too deeply") from None
    raise errors.unsupported_media_type(kind)


def _unicode_clean(value: Any, raw: bytes) -> Any:
    """Lone UTF-16 surrogates (``"\\ud800"``) become U+FFFD, as Go's JSON decoder does.

    They can only come from escapes, so bodies without a backslash skip the walk.
    """
    if b"\\" not in raw:
        return value
    return _replace_surrogates(value)


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    return value


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def flag_param(query: Any, name: str) -> bool:
    value = query.get(name, "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise errors.bad_request(f"invalid value for {name}: {value!r} (want true or false)")


def int_param(query: Any, name: str, *, minimum: int = 0) -> int | None:
    if name not in query:
        return None
    try:
        value = int(query[name])
    except ValueError:
        raise errors.bad_request(f"invalid value for {name}: {query[name]!r}") from None
    if value < minimum:
        raise errors.bad_request(f"invalid value for {name}: {value} (minimum {minimum})")
    return value


def is_watch(query: Any, target: Target) -> bool:
    return target.watch_path or flag_param(query, "watch")


def list_options(query: Any, target: Target) -> ListOptions:
    """labelSelector, fieldSelector, limit, continue and resourceVersion of a list or watch."""
    opts = ListOptions(
        limit=int_param(query, "limit") or 0,
        continue_token=query.get("continue", ""),
        resource_version=query.get("resourceVersion", ""),
        resource_version_match=query.get("resourceVersionMatch", ""),
    )
    if opts.resource_version_match not in ("", "Exact", "NotOlderThan"):
        raise errors.bad_request(
            f"unsupported resourceVersionMatch: {opts.resource_version_match!r}")
    if opts.continue_token and opts.resource_version not in ("", "0"):
        raise errors.bad_request("specifying resource version is not allowed when using continue")
    if query.get("labelSelector"):
        try:
            opts.label_selector = parse_label_selector(query["labelSelector"])
        except ValueError as exc:
            raise errors.bad_request(f"unable to parse requirement: {exc}") from None
    if query.get("fieldSelector"):
        try:
            selector = parse_field_selector(query["fieldSelector"])
        except ValueError as exc:
            raise errors.bad_request(f"invalid field selector: {exc}") from None
        try:
            selector.check_supported({"metadata.name", "metadata.namespace"}
                                     | target.rt.strategy.field_label_names())
        except ValueError as exc:
            raise errors.bad_request(str(exc)) from None
        opts.field_selector = selector
    return opts


@dataclass(frozen=True)
class WriteParams:
    dry_run: bool
    field_manager: str
    field_validation: str
    force: bool


def write_params(query: Any, user_agent: str, patch_type: str = "") -> WriteParams:
    """dryRun, fieldManager, fieldValidation and force, checked as Kubernetes checks them."""
    dry = query.getall("dryRun", []) if hasattr(query, "getall") else (
        [query["dryRun"]] if "dryRun" in query else [])
    for value in dry:
        if value != "All":
            raise errors.bad_request(f"Invalid dry run value: {value!r}: only All is supported")
    manager = query.get("fieldManager", "")
    if len(manager) > MAX_FIELD_MANAGER:
        raise errors.bad_request(f"fieldManager may not be more than {MAX_FIELD_MANAGER} bytes")
    if not manager and patch_type != "apply":
        # Kubernetes names an unnamed writer after its user agent ("kubectl", "python").
        manager = (user_agent.split("/", 1)[0] or "unknown")[:MAX_FIELD_MANAGER]
    validation = query.get("fieldValidation", "Warn") or "Warn"
    if validation not in ("Strict", "Warn", "Ignore"):
        raise errors.bad_request(
            f"fieldValidation {validation!r} is invalid: valid values are Ignore, Warn, Strict")
    force = flag_param(query, "force")
    if force and patch_type != "apply":
        raise errors.bad_request("force may only be set for apply patches")
    return WriteParams(bool(dry), manager, validation, force)


DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"


def delete_options(query: Any, body: Any) -> DeleteOptions:
    """DeleteOptions from the body (kubectl sends one) and the query (the Python client)."""
    opts: dict[str, Any] = {}
    if body is not None:
        if not isinstance(body, dict):
            raise errors.bad_request("the DeleteOptions body must be an object")
        decoded = schema.decode(body, DELETE_OPTIONS)  # wrong JSON types: 400, as Go's decoder
        if decoded.type_errors:
            raise errors.bad_request(
                "; ".join(c["message"] for c in decoded.type_errors), decoded.type_errors)
        opts = decoded.object
    grace = opts.get("gracePeriodSeconds")
    if grace is None:
        grace = int_param(query, "gracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 0):
        raise errors.bad_request(f"invalid gracePeriodSeconds: {grace!r}")
    propagation = opts.get("propagationPolicy") or query.get("propagationPolicy", "")
    orphan = opts.get("orphanDependents")
    if orphan is None and "orphanDependents" in query:
        orphan = flag_param(query, "orphanDependents")
    if orphan is not None:
        if propagation:
            raise errors.bad_request(
                "propagationPolicy and orphanDependents may not both be set")
        propagation = "Orphan" if orphan else "Background"
    if propagation not in ("", "Background", "Foreground", "Orphan"):
        raise errors.bad_request(
            f"propagationPolicy {propagation!r} is invalid: want Orphan, Background or "
            "Foreground")
    pre = opts.get("preconditions") or {}
    if not isinstance(pre, dict):
        raise errors.bad_request("preconditions must be an object")
    dry = opts.get("dryRun") or (query.getall("dryRun", []) if hasattr(query, "getall") else [])
    if any(v != "All" for v in dry):
        raise errors.bad_request("Invalid dry run value: only All is supported")
    return DeleteOptions(grace_period=grace, propagation=propagation,
                         uid=str(pre.get("uid") or ""),
                         resource_version=str(pre.get("resourceVersion") or ""),
                         dry_run=bool(dry))


@dataclass(frozen=True)
class Output:
    """How to encode the response: JSON or YAML, whole objects, Tables or metadata only."""

    yaml: bool = False
    #: "", "Table" or "PartialObjectMetadata"
    as_kind: str = ""


def output_for(accept: str) -> Output:
    """The first media type in ``Accept`` that we can produce."""
    if not accept:
        return Output()
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        kind = pieces[0].lower()
        params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in pieces[1:])}
        as_kind = params.get("as", "")
        if as_kind:
            if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1") \
                    and as_kind in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList") \
                    and kind in (JSON, "*/*"):
                return Output(False, "PartialObjectMetadata" if as_kind.startswith("Partial")
                              else "Table")
            continue
        if kind in (JSON, "*/*", "application/*"):
            return Output()
        if kind in _YAML_TYPES:
            return Output(yaml=True)
    raise errors.not_acceptable(accept)
