"""Fuzzing the API from its own OpenAPI documents: no 5xx, no traceback, errors are Statuses.

Every operation in ``/openapi/v3`` (except streaming ones: watch and pods/log) is called with
path parameters, query parameters and bodies that hypothesis draws from the operation's
declared parameters and the body's schema: well-typed objects, mutated ones (wrong types,
unknown fields, nulls, odd unicode, deep nesting) and arbitrary JSON, under every media type
the operation accepts. The server runs in a thread with its own event loop, so hypothesis
drives it with plain blocking HTTP.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from objgen import dns_labels, invalid_objects, json_values, valid_objects

from controlplane.api import openapi, schema
from controlplane.api.resources import group_versions
from controlplane.api.server import ApiServer
from controlplane.auth.pki import ClusterPKI
from raftstore.memory import MemoryStore

PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml"]
SKIPPED_PARAMS = {"watch", "pretty", "timeoutSeconds", "allowWatchBookmarks",
                  "sendInitialEvents"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    query: tuple[tuple[str, str], ...]  # (name, schema type)
    body_type: str


def _type_of(group: str, version: str, kind: str) -> str:
    known = {t.rpartition(".")[2]: t for t in schema.types()
             if t.rsplit(".", 2)[-2] == version and (group.split(".")[0] in t or not group)}
    return known[kind]


def _operations() -> list[Operation]:
    ops = []
    for group, version in group_versions():
        doc = json.loads(openapi.document(group, version) or b"{}")
        for path, item in doc["paths"].items():
            if path.endswith("/log") or "{" not in path and path.endswith("/"):
                continue
            for method, op in item.items():
                if method == "parameters":
                    continue
                query = tuple((p["name"], p.get("schema", {}).get("type", "string"))
                              for p in [*op.get("parameters", ()), *item.get("parameters", ())]
                              if p["in"] == "query" and p["name"] not in SKIPPED_PARAMS)
                body_type = ""
                content = (op.get("requestBody") or {}).get("content") or {}
                for media in content.values():
                    ref = media.get("schema", {}).get("$ref", "")
                    body_type = ref.rpartition("/")[2]
                if method == "patch":  # a patch is shaped like what it patches
                    gvk = op["x-kubernetes-group-version-kind"]
                    body_type = _type_of(gvk["group"], gvk["version"], gvk["kind"])
                ops.append(Operation(method.upper(), path, query, body_type))
    return ops


OPERATIONS = _operations()


@dataclass
class ThreadedApi:
    url: str
    context: ssl.SSLContext

    def call(self, method: str, path: str, body: bytes | None, content_type: str
             ) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()


@pytest.fixture(scope="module")
def threaded_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedApi]:
    pki = ClusterPKI.create(Path(tmp_path_factory.mktemp("fuzz")) / "pki")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = ApiServer(MemoryStore(), pki=pki)
    cert, key = pki.issue_server_cert("fuzz", ["127.0.0.1"])
    port = asyncio.run_coroutine_threadsafe(
        server.start("127.0.0.1", 0, pki.server_ssl_context(cert, key)), loop).result(30)
    asyncio.run_coroutine_threadsafe(server.wait_seeded(), loop).result(30)
    try:
        yield ThreadedApi(f"https://127.0.0.1:{port}",
                          pki.client_ssl_context(pki.admin_cert_pem, pki.admin_key_pem))
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


#: Values each query parameter takes when a client means well.
GOOD_VALUES = {
    "dryRun": ["All"], "fieldValidation": ["Strict", "Warn", "Ignore"],
    "force": ["true", "false"], "fieldManager": ["fuzzer", "kubectl"],
    "propagationPolicy": ["Background", "Foreground", "Orphan"],
    "orphanDependents": ["true", "false"], "gracePeriodSeconds": ["0", "5", "30"],
    "labelSelector": ["app=x", "a in (b,c)", "!a"], "fieldSelector": ["metadata.name=a"],
    "limit": ["1", "2", "500"], "resourceVersion": ["0", "1", ""],
    "resourceVersionMatch": ["Exact", "NotOlderThan"],
}


def _query_value(name: str, kind: str) -> st.SearchStrategy[str]:
    odd = st.text(max_size=12)
    if kind == "boolean":
        odd = st.one_of(st.sampled_from(["true", "false", "1", "0"]), odd)
    elif kind == "integer":
        odd = st.one_of(st.integers(-5, 10**6).map(str), odd)
    good = st.sampled_from(GOOD_VALUES.get(name, ["x"]))
    return st.one_of(good, good, good, odd)


#: Names drawn often, so that writes and reads of one run meet the same objects.
COMMON_NAMES = ["a", "b", "default"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, str]:
    op = draw(st.sampled_from(OPERATIONS))
    namespace = draw(st.sampled_from(["default", "kube-system", "missing"]))
    name = draw(st.one_of(st.sampled_from(COMMON_NAMES), dns_labels(),
                          st.text(min_size=1, max_size=20)))
    path = op.path.replace("{namespace}", namespace)
    path = path.replace("{name}", urllib.parse.quote(name, safe=""))
    params = [(p, draw(_query_value(p, kind))) for p, kind in op.query
              if draw(st.booleans())]
    if params:
        path += "?" + urllib.parse.urlencode(params)
    if not op.body_type:
        return op.method, path, None, "application/json"
    if op.method == "PATCH":
        content_type = draw(st.sampled_from(PATCH_TYPES))
    else:
        content_type = draw(st.sampled_from(["application/json", "application/json",
                                             "application/yaml", "text/plain"]))
    body: Any = draw(st.one_of(valid_objects(op.body_type), invalid_objects(op.body_type),
                               json_values()))
    if isinstance(body, dict) and isinstance(body.get("metadata"), dict) \
            and draw(st.sampled_from([True, True, True, False])):
        # Mostly agree with the URL, so requests get past the first checks.
        body["metadata"]["name"] = name if "{name}" in op.path else draw(
            st.sampled_from(COMMON_NAMES))
        body["metadata"]["namespace"] = namespace
    return op.method, path, json.dumps(body).encode(), content_type


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests())
def test_fuzzed_requests_get_clean_answers(threaded_api: ThreadedApi,
                                           request: tuple[str, str, bytes | None, str]) -> None:
    method, path, body, content_type = request
    status, raw = threaded_api.call(method, path, body, content_type)
    assert status < 500, (method, path, status, raw[:500])
    text = raw.decode("utf-8", "replace")
    assert "Traceback" not in text
    if status >= 400:
        answer = json.loads(raw)
        assert answer["kind"] == "Status" and answer["code"] == status, answer
        assert answer["message"], answer


def test_operations_cover_every_resource() -> None:
    methods = {(op.method, op.path) for op in OPERATIONS}
    assert ("POST", "/api/v1/namespaces/{namespace}/pods") in methods
    assert ("PATCH", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale") in methods
    assert ("PUT", "/api/v1/nodes/{name}/status") in methods
    assert len(OPERATIONS) > 100
