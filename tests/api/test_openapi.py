"""OpenAPI v3 (``controlplane.api.openapi``): what kubectl 1.32 needs from it.

kubectl's server-side field validation check (client-go ``supportsQueryParamV3``) looks, in
the document of an object's GroupVersion, for the first PATCH operation whose
``x-kubernetes-group-version-kind`` is the object's GVK, and reads only that operation's own
``parameters``: ``_supports_field_validation`` below is that check, line for line, over
*every* matching operation (Go iterates a map, so any of them may be the first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.api import openapi, resources
from controlplane.api.resources import ResourceType

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("get", "put", "post", "delete", "patch")
ACTIONS = {"get", "list", "post", "put", "patch", "delete", "deletecollection", "connect"}


def gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def load(path: str) -> dict[str, Any]:
    body = openapi.document_for_path(path)
    assert body is not None, path
    return json.loads(body)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def gvk_of(rt: ResourceType) -> dict[str, str]:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _supports_field_validation(doc: dict[str, Any], gvk: dict[str, str]) -> list[bool]:
    """For each PATCH op of ``gvk``: does it list fieldValidation among its own parameters?"""
    return [any(p.get("name") == "fieldValidation" for p in op.get("parameters", []))
            for _, method, op in operations(doc)
            if method == "patch" and op.get("x-kubernetes-group-version-kind") == gvk]


def test_index_lists_every_group_version_with_the_hash_of_its_document() -> None:
    paths = openapi.index()["paths"]
    expected = {gv_path(g, v) for g, v in resources.group_versions()} | {"api", "apis"}
    assert set(paths) == expected
    for path, entry in paths.items():
        body = openapi.document_for_path(path)
        assert body is not None
        digest = openapi.etag(body)
        assert len(digest) == 128 and digest == digest.upper()
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={digest}"


def test_document_by_group_version() -> None:
    assert openapi.document("", "v1") == openapi.document_for_path("/api/v1/")
    assert openapi.document("apps", "v1") == openapi.document_for_path("apis/apps/v1")
    assert openapi.document("", "v2") is None
    assert openapi.document("batch", "v1") is None
    assert openapi.document_for_path("apis/nope/v1") is None


@pytest.mark.parametrize("path", sorted(openapi.index()["paths"]))
def test_documents_are_openapi3_and_every_ref_resolves(path: str) -> None:
    doc = load(path)
    assert doc["openapi"].startswith("3.0.")
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith(openapi.REF_PREFIX), ref
        assert ref[len(openapi.REF_PREFIX):] in schemas, ref
    # Nothing unused: every schema is reachable from the paths.
    reachable: set[str] = set()
    pending = [r[len(openapi.REF_PREFIX):] for r in refs(doc["paths"])]
    while pending:
        name = pending.pop()
        if name not in reachable:
            reachable.add(name)
            pending.extend(r[len(openapi.REF_PREFIX):] for r in refs(schemas[name]))
    assert reachable == set(schemas)


@pytest.mark.parametrize("rt", resources.RESOURCES, ids=lambda rt: rt.plural)
def test_kubectl_finds_field_validation_on_patch(rt: ResourceType) -> None:
    doc = load(gv_path(rt.group, rt.version))
    found = _supports_field_validation(doc, gvk_of(rt))
    assert found and all(found)


@pytest.mark.parametrize("rt", resources.RESOURCES, ids=lambda rt: rt.plural)
def test_resource_paths_and_operations(rt: ResourceType) -> None:
    doc = load(gv_path(rt.group, rt.version))
    prefix = "/" + gv_path(rt.group, rt.version)
    base = (f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced
            else f"{prefix}/{rt.plural}")
    paths = doc["paths"]
    assert set(paths[base]) >= {"get", "post", "delete", "parameters"}
    assert set(paths[base + "/{name}"]) >= {"get", "put", "patch", "delete", "parameters"}
    if rt.namespaced:
        assert paths[f"{prefix}/{rt.plural}"]["get"]["x-kubernetes-action"] == "list"
    actions = {(path, m): op.get("x-kubernetes-action") for path, m, op in operations(doc)}
    assert actions[(base, "get")] == "list"
    assert actions[(base, "delete")] == "deletecollection"
    assert actions[(base + "/{name}", "patch")] == "patch"
    for sub in rt.subresources:
        assert base + "/{name}/" + sub in paths, sub
    if "status" in rt.subresources:
        status = paths[base + "/{name}/status"]
        assert status["patch"]["x-kubernetes-group-version-kind"] == gvk_of(rt)
    if "scale" in rt.subresources:
        scale = paths[base + "/{name}/scale"]["patch"]
        assert scale["x-kubernetes-group-version-kind"] == {
            "group": "autoscaling", "version": "v1", "kind": "Scale"}
    item = paths[base + "/{name}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert item["schema"] == {"$ref": openapi.REF_PREFIX + rt.schema}
    listing = paths[base]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"] == {"$ref": openapi.REF_PREFIX + rt.schema + "List"}
    schemas = doc["components"]["schemas"]
    assert gvk_of(rt) in schemas[rt.schema]["x-kubernetes-group-version-kind"]
    assert {**gvk_of(rt), "kind": rt.kind + "List"} in \
        schemas[rt.schema + "List"]["x-kubernetes-group-version-kind"]


@pytest.mark.parametrize("group_version", resources.group_versions(),
                         ids=lambda gv: gv_path(*gv))
def test_every_operation_names_its_action_gvk_and_write_parameters(
        group_version: tuple[str, str]) -> None:
    doc = load(gv_path(*group_version))
    for path, method, op in operations(doc):
        if path.endswith("/"):  # the APIResourceList of the group-version
            continue
        assert op["x-kubernetes-action"] in ACTIONS, (path, method)
        assert set(op["x-kubernetes-group-version-kind"]) == {"group", "version", "kind"}
        names = {p["name"] for p in op.get("parameters", [])}
        if method in ("post", "put", "patch") and op["x-kubernetes-action"] != "connect":
            assert {"dryRun", "fieldManager", "fieldValidation"} <= names, (path, method)
        if method == "patch":
            assert "force" in names
            assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
        if op["x-kubernetes-action"] == "list":
            assert {"watch", "labelSelector", "fieldSelector", "limit", "continue",
                    "resourceVersion", "allowWatchBookmarks"} <= names
        for param in [*op.get("parameters", []), *doc["paths"][path].get("parameters", [])]:
            assert param["in"] in ("query", "path") and param["schema"]["type"]
    for path, item in doc["paths"].items():
        for template in ("{name}", "{namespace}"):
            if template in path:
                assert any(p["name"] == template[1:-1] and p["in"] == "path" and p["required"]
                           for p in item["parameters"]), path


def _resolve(schemas: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (bare or in ``allOf``) as ``kubectl explain`` does."""
    while True:
        if "$ref" in prop:
            prop = schemas[prop["$ref"][len(openapi.REF_PREFIX):]]
        elif "allOf" in prop:
            prop = prop["allOf"][0]
        else:
            return prop


def test_explain_can_walk_a_deployment_down_to_a_port() -> None:
    schemas = load("apis/apps/v1")["components"]["schemas"]
    node = schemas["io.k8s.api.apps.v1.Deployment"]
    for field in ("spec", "template", "spec", "containers"):
        node = _resolve(schemas, node["properties"][field])
    assert node["type"] == "array"
    assert node["x-kubernetes-patch-merge-key"] == "name"
    assert node["x-kubernetes-patch-strategy"] == "merge"
    container = _resolve(schemas, node["items"])
    ports = container["properties"]["ports"]
    port = _resolve(schemas, ports["items"])
    assert port["properties"]["containerPort"]["type"] == "integer"
    assert port["properties"]["containerPort"]["format"] == "int32"
    assert "containerPort" in port["required"]
    assert container["properties"]["name"]["description"]


def test_int_or_string_and_quantity_schemas() -> None:
    schemas = load("api/v1")["components"]["schemas"]
    int_or_string = schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["x-kubernetes-int-or-string"] is True
    assert int_or_string["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    quantity = schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert quantity["x-kubernetes-int-or-string"] is True and quantity["pattern"]
    port = schemas["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]
    assert _resolve(schemas, port) is int_or_string
    assert schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"] == {
        "description": schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"]["description"],
        "type": "string", "format": "date-time"}


def test_documents_are_identical_across_processes() -> None:
    """kubectl caches a document under its hash: a restart must not change it."""
    code = "import json; from controlplane.api import openapi; print(json.dumps(openapi.index()))"
    outputs = {
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True, timeout=120,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")}
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == openapi.index()
