"""The REST layer over HTTPS, in process: verbs, errors, watch, subresources, deletion.

Each test talks to a fresh ApiServer over a MemoryStore with the admin credential (the
``api`` fixture); what a real kubectl and Python client see is in test_kubectl.py and
test_python_client.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from harness import Api

CM = "/api/v1/namespaces/default/configmaps"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"


def configmap(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, **meta}, "data": data or {"k": "v"}}


def deployment(name: str, replicas: int = 2, image: str = "busybox:1") -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


def pod(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}


async def test_create_get_update_delete(api: Api) -> None:
    status, created, _ = await api.call("POST", CM, configmap("a"))
    assert status == 201, created
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    status, got, _ = await api.call("GET", f"{CM}/a")
    assert status == 200 and got == created
    got["data"] = {"k": "w"}
    status, updated, _ = await api.call("PUT", f"{CM}/a", got)
    assert status == 200 and updated["data"] == {"k": "w"}
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status, gone, _ = await api.call("DELETE", f"{CM}/a")
    assert status == 200 and gone["status"] == "Success"
    status, missing, _ = await api.call("GET", f"{CM}/a")
    assert status == 404 and missing["reason"] == "NotFound" and missing["kind"] == "Status"


async def test_create_twice_is_already_exists(api: Api) -> None:
    await api.call("POST", CM, configmap("dup"))
    status, body, _ = await api.call("POST", CM, configmap("dup", {"x": "y"}))
    assert (status, body["reason"]) == (409, "AlreadyExists")
    _, got, _ = await api.call("GET", f"{CM}/dup")
    assert got["data"] == {"k": "v"}


async def test_stale_update_is_conflict_and_writes_nothing(api: Api) -> None:
    _, first, _ = await api.call("POST", CM, configmap("c"))
    fresh = dict(first, data={"k": "1"})
    assert (await api.call("PUT", f"{CM}/c", fresh))[0] == 200
    stale = dict(first, data={"k": "2"})
    status, body, _ = await api.call("PUT", f"{CM}/c", stale)
    assert (status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    assert (await api.call("GET", f"{CM}/c"))[1]["data"] == {"k": "1"}


async def test_noop_update_keeps_resource_version(api: Api) -> None:
    _, created, _ = await api.call("POST", CM, configmap("same"))
    _, updated, _ = await api.call("PUT", f"{CM}/same", created)
    assert updated["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_generate_name(api: Api) -> None:
    body = configmap("")
    body["metadata"] = {"generateName": "gen-"}
    status, created, _ = await api.call("POST", CM, body)
    assert status == 201 and created["metadata"]["name"].startswith("gen-")
    assert len(created["metadata"]["name"]) == len("gen-") + 5


async def test_missing_namespace_is_not_found(api: Api) -> None:
    status, body, _ = await api.call("POST", "/api/v1/namespaces/nope/configmaps",
                                     configmap("x"))
    assert status == 404 and body["details"]["kind"] == "namespaces"


async def test_list_selectors_limit_continue(api: Api) -> None:
    for i in range(7):
        await api.call("POST", CM, configmap(f"l{i}", labels={"n": str(i % 2)}))
    _, odd, _ = await api.call("GET", f"{CM}?labelSelector=n%3D1")
    assert [o["metadata"]["name"] for o in odd["items"]] == ["l1", "l3", "l5"]
    _, named, _ = await api.call("GET", f"{CM}?fieldSelector=metadata.name%3Dl4")
    assert [o["metadata"]["name"] for o in named["items"]] == ["l4"]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        _, page, _ = await api.call("GET", f"{CM}?limit=3" + (f"&continue={token}"
                                                              if token else ""))
        pages += 1
        seen += [o["metadata"]["name"] for o in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
        assert page["metadata"]["remainingItemCount"] == 7 - len(seen)
    assert seen == [f"l{i}" for i in range(7)] and pages == 3
    assert page["kind"] == "ConfigMapList"


async def test_list_pages_read_one_revision(api: Api) -> None:
    for i in range(4):
        await api.call("POST", CM, configmap(f"p{i}"))
    _, first, _ = await api.call("GET", f"{CM}?limit=2")
    await api.call("POST", CM, configmap("p9"))
    _, second, _ = await api.call("GET", f"{CM}?limit=2&continue={first['metadata']['continue']}")
    names = [o["metadata"]["name"] for o in first["items"] + second["items"]]
    assert names == ["p0", "p1", "p2", "p3"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


@pytest.mark.parametrize("query, reason", [
    ("labelSelector=a%20in%20(", "BadRequest"),
    ("fieldSelector=spec.nothing%3Dx", "BadRequest"),
    ("limit=-1", "BadRequest"),
    ("continue=garbage", "BadRequest"),
    ("resourceVersion=abc&resourceVersionMatch=Exact", "BadRequest"),
])
async def test_bad_list_parameters(api: Api, query: str, reason: str) -> None:
    status, body, _ = await api.call("GET", f"{CM}?{query}")
    assert (status, body["reason"]) == (400, reason), body


async def _watch_events(api: Api, path: str, count: int, timeout: float = 5.0
                        ) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with api.session.get(api.url + path, timeout=aiohttp.ClientTimeout(total=timeout)
                               ) as answer:
        assert answer.status == 200
        async for line in answer.content:
            if line.strip():
                events.append(json.loads(line))
            if len(events) >= count:
                break
    return events


async def test_watch_from_resource_version(api: Api) -> None:
    _, created, _ = await api.call("POST", CM, configmap("w"))
    rv = created["metadata"]["resourceVersion"]

    async def changes() -> None:
        await asyncio.sleep(0.1)
        got = (await api.call("GET", f"{CM}/w"))[1]
        got["data"] = {"k": "2"}
        await api.call("PUT", f"{CM}/w", got)
        await api.call("DELETE", f"{CM}/w")

    task = asyncio.create_task(changes())
    events = await _watch_events(api, f"{CM}?watch=true&resourceVersion={rv}", 2)
    await task
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[0]["object"]["data"] == {"k": "2"}
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) > int(
        events[0]["object"]["metadata"]["resourceVersion"])


async def test_watch_without_version_lists_first_and_bookmarks(api: Api) -> None:
    await api.call("POST", CM, configmap("b1"))
    events = await _watch_events(api, f"{CM}?watch=1&allowWatchBookmarks=true", 2)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "b1"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["kind"] == "ConfigMap"
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) >= int(
        events[0]["object"]["metadata"]["resourceVersion"])


async def test_watch_label_selector_transitions(api: Api) -> None:
    _, created, _ = await api.call("POST", CM, configmap("t", labels={"sel": "no"}))
    rv = created["metadata"]["resourceVersion"]

    async def flip() -> None:
        await asyncio.sleep(0.1)
        for value in ("yes", "no"):
            got = (await api.call("GET", f"{CM}/t"))[1]
            got["metadata"]["labels"]["sel"] = value
            await api.call("PUT", f"{CM}/t", got)

    task = asyncio.create_task(flip())
    events = await _watch_events(api, f"{CM}?watch=1&labelSelector=sel%3Dyes&"
                                      f"resourceVersion={rv}", 2)
    await task
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


async def test_watch_timeout_closes_stream(api: Api) -> None:
    async with api.session.get(f"{api.url}{CM}?watch=1&timeoutSeconds=1&resourceVersion=1",
                               timeout=aiohttp.ClientTimeout(total=10)) as answer:
        body = await answer.read()
    assert answer.status == 200 and body == b""


async def test_watch_too_old_is_expired(api: Api) -> None:
    for i in range(5):
        await api.call("POST", CM, configmap(f"o{i}"))
    status = await api.server.store.status()
    await api.server.store.compact(status.revision)
    events = await _watch_events(api, f"{CM}?watch=1&resourceVersion=1", 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_table_output(api: Api) -> None:
    await api.call("POST", CM, configmap("tbl", {"a": "1", "b": "2"}))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table, _ = await api.call("GET", CM, headers={"Accept": accept})
    assert status == 200 and table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["tbl", 2]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


async def test_yaml_in_and_out(api: Api) -> None:
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v\n"
    status, _, _ = await api.call("POST", CM, raw=body, content_type="application/yaml")
    assert status == 201
    async with api.session.get(f"{api.url}{CM}/y", headers={"Accept": "application/yaml"}
                               ) as answer:
        text = await answer.text()
    assert answer.headers["Content-Type"].startswith("application/yaml") and "name: y" in text


async def test_dry_run_writes_nothing(api: Api) -> None:
    status, body, _ = await api.call("POST", f"{CM}?dryRun=All", configmap("dry"))
    assert status == 201 and body["metadata"]["name"] == "dry"
    assert (await api.call("GET", f"{CM}/dry"))[0] == 404
    await api.call("POST", CM, configmap("dry2"))
    status, body, _ = await api.call(
        "PATCH", f"{CM}/dry2?dryRun=All", {"data": {"k": "changed"}},
        content_type="application/merge-patch+json")
    assert status == 200 and body["data"] == {"k": "changed"}
    assert (await api.call("GET", f"{CM}/dry2"))[1]["data"] == {"k": "v"}
    assert (await api.call("DELETE", f"{CM}/dry2?dryRun=All"))[0] == 200
    assert (await api.call("GET", f"{CM}/dry2"))[0] == 200


async def test_field_validation_modes(api: Api) -> None:
    body = configmap("fv")
    body["bogus"] = 1
    status, err, _ = await api.call("POST", f"{CM}?fieldValidation=Strict", body)
    assert status == 400 and 'unknown field "bogus"' in err["message"]
    assert (await api.call("GET", f"{CM}/fv"))[0] == 404
    status, created, headers = await api.call("POST", f"{CM}?fieldValidation=Warn", body)
    assert status == 201 and "bogus" not in created
    assert 'unknown field \\"bogus\\"' in headers["Warning"]
    body["metadata"]["name"] = "fv2"
    status, created, headers = await api.call("POST", f"{CM}?fieldValidation=Ignore", body)
    assert status == 201 and "Warning" not in headers


async def test_patch_types(api: Api) -> None:
    await api.call("POST", DEPLOY, deployment("pt"))
    path = f"{DEPLOY}/pt"
    status, body, _ = await api.call("PATCH", path, {"spec": {"replicas": 5}},
                                     content_type="application/merge-patch+json")
    assert status == 200 and body["spec"]["replicas"] == 5
    assert body["metadata"]["generation"] == 2
    status, body, _ = await api.call(
        "PATCH", path, [{"op": "replace", "path": "/spec/replicas", "value": 1}],
        content_type="application/json-patch+json")
    assert status == 200 and body["spec"]["replicas"] == 1
    smp = {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "b:2"}]}}}}
    status, body, _ = await api.call("PATCH", path, smp,
                                     content_type="application/strategic-merge-patch+json")
    names = [c["name"] for c in body["spec"]["template"]["spec"]["containers"]]
    assert status == 200 and sorted(names) == ["c", "side"]


async def test_server_side_apply_and_conflict(api: Api) -> None:
    path = f"{DEPLOY}/ssa?fieldManager=alice"
    status, body, _ = await api.call("PATCH", path, deployment("ssa", 3),
                                     content_type="application/apply-patch+yaml")
    assert status == 201 and body["spec"]["replicas"] == 3
    managers = {m["manager"]: m["operation"] for m in body["metadata"]["managedFields"]}
    assert managers == {"alice": "Apply"}
    status, body, _ = await api.call("PATCH", f"{DEPLOY}/ssa?fieldManager=bob",
                                     deployment("ssa", 4),
                                     content_type="application/apply-patch+yaml")
    assert status == 409 and body["reason"] == "Conflict"
    assert body["details"]["causes"][0]["reason"] == "FieldManagerConflict"
    assert body["details"]["causes"][0]["field"] == ".spec.replicas"
    status, body, _ = await api.call("PATCH", f"{DEPLOY}/ssa?fieldManager=bob&force=true",
                                     deployment("ssa", 4),
                                     content_type="application/apply-patch+yaml")
    assert status == 200 and body["spec"]["replicas"] == 4


async def test_status_subresource_separates_spec_and_status(api: Api) -> None:
    _, created, _ = await api.call("POST", DEPLOY, deployment("st"))
    created["status"] = {"replicas": 9}
    created["spec"]["replicas"] = 4
    _, updated, _ = await api.call("PUT", f"{DEPLOY}/st", created)
    assert updated["spec"]["replicas"] == 4 and "replicas" not in (updated.get("status") or {})
    updated["status"] = {"replicas": 9}
    updated["spec"]["replicas"] = 7
    status, after, _ = await api.call("PUT", f"{DEPLOY}/st/status", updated)
    assert status == 200 and after["status"]["replicas"] == 9 and after["spec"]["replicas"] == 4


async def test_scale_subresource(api: Api) -> None:
    await api.call("POST", DEPLOY, deployment("sc", 2))
    status, scale, _ = await api.call("GET", f"{DEPLOY}/sc/scale")
    assert status == 200 and scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    assert scale["status"]["selector"] == "app=sc"
    status, scale, _ = await api.call("PATCH", f"{DEPLOY}/sc/scale", {"spec": {"replicas": 6}},
                                      content_type="application/merge-patch+json")
    assert status == 200 and scale["spec"]["replicas"] == 6
    assert (await api.call("GET", f"{DEPLOY}/sc"))[1]["spec"]["replicas"] == 6


async def test_binding_sets_node_once(api: Api) -> None:
    await api.call("POST", PODS, pod("b"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"},
               "target": {"kind": "Node", "name": "n1"}}
    assert (await api.call("POST", f"{PODS}/b/binding", binding))[0] == 201
    got = (await api.call("GET", f"{PODS}/b"))[1]
    assert got["spec"]["nodeName"] == "n1"
    status, body, _ = await api.call("POST", f"{PODS}/b/binding", binding)
    assert (status, body["reason"]) == (409, "Conflict")


async def test_pod_graceful_deletion_when_bound(api: Api) -> None:
    await api.call("POST", PODS, pod("g"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "g"},
               "target": {"kind": "Node", "name": "n1"}}
    await api.call("POST", f"{PODS}/g/binding", binding)
    status, body, _ = await api.call("DELETE", f"{PODS}/g")
    assert status == 202 and body["metadata"]["deletionTimestamp"]
    assert body["metadata"]["deletionGracePeriodSeconds"] == 30
    status, body, _ = await api.call("DELETE", f"{PODS}/g", {"gracePeriodSeconds": 0})
    assert status == 200
    assert (await api.call("GET", f"{PODS}/g"))[0] == 404


async def test_finalizers_hold_deletion(api: Api) -> None:
    await api.call("POST", CM, configmap("fin", finalizers=["example.com/hold"]))
    status, body, _ = await api.call("DELETE", f"{CM}/fin")
    assert status == 202 and body["metadata"]["deletionTimestamp"]
    got = (await api.call("GET", f"{CM}/fin"))[1]
    got["metadata"]["finalizers"] = []
    assert (await api.call("PUT", f"{CM}/fin", got))[0] == 200
    assert (await api.call("GET", f"{CM}/fin"))[0] == 404


async def test_a_second_delete_changes_the_propagation_policy(api: Api) -> None:
    """Without a garbage collector running, the finalizers show what each delete asked:
    the policy named last replaces the other's finalizer (Background drops both)."""
    await api.call("POST", CM, configmap("twice", finalizers=["example.com/hold"]))
    asked = []
    for policy in ("Orphan", "Foreground", None, "Background"):
        body = {"propagationPolicy": policy} if policy else None
        status, got, _ = await api.call("DELETE", f"{CM}/twice", body)
        assert status in (200, 202), got
        asked.append(got["metadata"]["finalizers"])
    assert asked == [["example.com/hold", "orphan"], ["example.com/hold", "foregroundDeletion"],
                     ["example.com/hold", "foregroundDeletion"], ["example.com/hold"]]
    patched = await api.call("PATCH", f"{CM}/twice", {"metadata": {"labels": {"a": "b"}}},
                             content_type="application/merge-patch+json")
    assert patched[0] == 200, patched[1]


async def _wait_gone(api: Api, path: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if (await api.call("GET", path))[0] == 404:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} still exists")


def _owned_pod(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    return pod(name, ownerReferences=[{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": True}])


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
async def test_propagation_policies(api: Api, controllers: None, policy: str) -> None:
    _, owner, _ = await api.call("POST", DEPLOY, deployment("own"))
    await api.call("POST", PODS, _owned_pod("dep", owner))
    status, _, _ = await api.call("DELETE", f"{DEPLOY}/own", {"propagationPolicy": policy})
    assert status in (200, 202)
    await _wait_gone(api, f"{DEPLOY}/own")
    if policy == "Orphan":
        got = (await api.call("GET", f"{PODS}/dep"))[1]
        assert "ownerReferences" not in got["metadata"]
    else:
        await _wait_gone(api, f"{PODS}/dep")


async def test_namespace_deletion_empties_it(api: Api, controllers: None) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}}
    assert (await api.call("POST", "/api/v1/namespaces", ns))[0] == 201
    await api.call("POST", "/api/v1/namespaces/gone/configmaps", configmap("x"))
    status, body, _ = await api.call("DELETE", "/api/v1/namespaces/gone")
    assert status == 202 and body["status"]["phase"] == "Terminating"
    status, body, _ = await api.call("POST", "/api/v1/namespaces/gone/configmaps",
                                     configmap("y"))
    assert status in (403, 404)
    await _wait_gone(api, "/api/v1/namespaces/gone")
    assert (await api.call("GET", "/api/v1/namespaces/gone/configmaps/x"))[0] == 404


async def test_namespace_finalize_subresource(api: Api) -> None:
    """finalize changes spec.finalizers only; a deleted namespace goes once it is finalized."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fin"}}
    _, created, _ = await api.call("POST", "/api/v1/namespaces", ns)
    assert created["spec"]["finalizers"] == ["kubernetes"]
    status, got, _ = await api.call("GET", "/api/v1/namespaces/fin/status")
    assert status == 200 and got["status"]["phase"] == "Active"
    await api.call("POST", "/api/v1/namespaces/fin/configmaps", configmap("c"))
    status, body, _ = await api.call("DELETE", "/api/v1/namespaces/fin")
    assert status == 202 and body["spec"]["finalizers"] == ["kubernetes"]
    # No controller runs here: the namespace and its content wait.
    await asyncio.sleep(0.3)
    assert (await api.call("GET", "/api/v1/namespaces/fin/configmaps/c"))[0] == 200
    got = (await api.call("GET", "/api/v1/namespaces/fin"))[1]
    update = {**got, "metadata": {**got["metadata"], "labels": {"sneaked": "in"}},
              "spec": {"finalizers": ["example.com/last"]}}
    status, body, _ = await api.call("PUT", "/api/v1/namespaces/fin/finalize", update)
    assert status == 200 and body["spec"]["finalizers"] == ["example.com/last"]
    assert "sneaked" not in body["metadata"]["labels"]
    stale = {**got, "spec": {"finalizers": []}}
    assert (await api.call("PUT", "/api/v1/namespaces/fin/finalize", stale))[0] == 409
    done = {**body, "spec": {"finalizers": []}}
    status, _, _ = await api.call("PUT", "/api/v1/namespaces/fin/finalize", done)
    assert status == 200
    assert (await api.call("GET", "/api/v1/namespaces/fin"))[0] == 404
    status, _, _ = await api.call("PATCH", "/api/v1/namespaces/default/finalize", {},
                                  content_type="application/merge-patch+json")
    assert status == 405


BAD_INPUT = [
    ("malformed JSON", "POST", CM, b'{"apiVersion": "v1", "kind": ', "application/json", 400),
    ("malformed YAML", "POST", CM, b"metadata: [unclosed\n", "application/yaml", 400),
    ("two YAML documents", "POST", CM, b"a: 1\n---\nb: 2\n", "application/yaml", 400),
    ("not an object", "POST", CM, b"[1, 2]", "application/json", 400),
    ("wrong kind", "POST", CM, json.dumps({**configmap("k"), "kind": "Secret"}).encode(),
     "application/json", 400),
    ("wrong type", "POST", CM, json.dumps({**configmap("t"), "data": "text"}).encode(),
     "application/json", 400),
    ("invalid name", "POST", CM, json.dumps(configmap("Not_Valid")).encode(),
     "application/json", 422),
    ("missing name", "POST", CM, json.dumps(configmap("")).encode(), "application/json", 422),
    ("missing containers", "POST", PODS, json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}).encode(),
     "application/json", 422),
    ("protobuf body", "POST", CM, b"k8s\x00\n\x0f", "application/vnd.kubernetes.protobuf", 415),
    ("unknown media type", "POST", CM, b"x", "text/csv", 415),
    ("unknown resource", "POST", "/api/v1/namespaces/default/widgets", b"{}",
     "application/json", 404),
    ("over 3 MiB", "POST", CM, json.dumps(configmap("big", {"k": "x" * (3 * 1024 * 1024)})
                                          ).encode(), "application/json", 413),
]


@pytest.mark.parametrize("name, method, path, raw, content_type, code",
                         BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
async def test_bad_input_is_a_status_and_writes_nothing(
        api: Api, name: str, method: str, path: str, raw: bytes, content_type: str,
        code: int) -> None:
    before = (await api.server.store.status()).revision
    status, body, _ = await api.call(method, path, raw=raw, content_type=content_type)
    assert status == code, body
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == code
    assert "Traceback" not in json.dumps(body)
    assert (await api.server.store.status()).revision == before


async def test_invalid_has_causes(api: Api) -> None:
    status, body, _ = await api.call("POST", CM, configmap("Bad_Name"))
    assert status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"


BAD_PATCHES = [
    ("application/json-patch+json", [{"op": "replace", "path": "/nothing/here", "value": 1}],
     422),
    ("application/json-patch+json", [{"op": "frobnicate", "path": "/data"}], 422),
    ("application/json-patch+json", {"op": "add"}, 400),
    ("application/merge-patch+json", {"data": "not-a-map"}, 400),
    ("application/strategic-merge-patch+json", {"data": {"$patch": "explode"}}, 400),
    ("application/json", {"data": {}}, 415),
]


@pytest.mark.parametrize("content_type, patch, code", BAD_PATCHES)
async def test_bad_patches(api: Api, content_type: str, patch: Any, code: int) -> None:
    await api.call("POST", CM, configmap("bp"))
    before = (await api.server.store.status()).revision
    status, body, _ = await api.call("PATCH", f"{CM}/bp", patch, content_type=content_type)
    assert status == code, body
    assert body["kind"] == "Status"
    assert (await api.server.store.status()).revision == before


async def test_unauthenticated_is_401(api: Api) -> None:
    context = api.pki.client_ssl_context()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as anon:
        async with anon.get(f"{api.url}{CM}") as answer:
            body = await answer.json()
        assert answer.status == 401 and body["reason"] == "Unauthorized"
        async with anon.get(f"{api.url}/version") as answer:
            assert answer.status == 200


async def test_node_credential_limits(api: Api) -> None:
    cert, key = api.pki.issue_client_cert("system:node:n1", ["system:nodes"])
    context = api.pki.client_ssl_context(cert, key)
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    other = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}
    await api.call("POST", PODS, pod("mine"))
    await api.call("POST", PODS, pod("theirs"))
    for name, target in (("mine", "n1"), ("theirs", "n2")):
        await api.call("POST", f"{PODS}/{name}/binding", {
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"kind": "Node", "name": target}})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as s:
        async def call(method: str, path: str, body: Any, ctype: str = "application/json"
                       ) -> int:
            async with s.request(method, api.url + path, data=json.dumps(body),
                                 headers={"Content-Type": ctype}) as answer:
                return answer.status

        assert await call("POST", "/api/v1/nodes", node) == 201
        assert await call("POST", "/api/v1/nodes", other) == 403
        status_patch = {"status": {"phase": "Running"}}
        merge = "application/merge-patch+json"
        assert await call("PATCH", f"{PODS}/mine/status", status_patch, merge) == 200
        assert await call("PATCH", f"{PODS}/theirs/status", status_patch, merge) == 403
        assert await call("POST", CM, configmap("nodecm")) == 403
        async with s.get(f"{api.url}{PODS}") as answer:
            assert answer.status == 200


async def test_discovery_aggregated_content_type(api: Api) -> None:
    accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json")
    async with api.session.get(f"{api.url}/apis", headers={"Accept": accept}) as answer:
        body = await answer.json(content_type=None)
    assert answer.headers["Content-Type"] == \
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    groups = {item["metadata"]["name"] for item in body["items"]}
    assert groups == {"apps", "coordination.k8s.io", "discovery.k8s.io"}
    status, legacy, _ = await api.call("GET", "/api/v1")
    names = {r["name"] for r in legacy["resources"]}
    assert {"pods", "pods/status", "pods/binding", "configmaps", "nodes"} <= names


async def test_health_version_metrics(api: Api) -> None:
    for path in ("/healthz", "/livez", "/readyz"):
        status, body, _ = await api.call("GET", path)
        assert (status, body) == (200, "ok")
    status, version, _ = await api.call("GET", "/version")
    assert version["major"] == "1" and version["minor"].isdigit()
    await api.call("GET", CM)
    status, text, _ = await api.call("GET", "/metrics")
    assert status == 200
    assert 'apiserver_request_total{code="200",group="",resource="configmaps"' in text
    assert "apiserver_request_duration_seconds_bucket" in text
    assert "corral_store_request_duration_seconds_bucket" in text


async def test_digest_of_the_replica_follows_writes(api: Api) -> None:
    """``/corral/v1/digest``: what chaos runs compare across controllers after healing."""
    status, before, _ = await api.call("GET", "/corral/v1/digest")
    assert status == 200 and len(before["digest"]) == 64 and int(before["revision"]) > 0
    status, again, _ = await api.call("GET", "/corral/v1/digest")
    assert again == before  # nothing written in between: the same state, the same hash
    await api.call("POST", CM, {"metadata": {"name": "digest-me"}, "data": {"k": "v"}})
    status, after, _ = await api.call("GET", "/corral/v1/digest")
    assert int(after["revision"]) > int(before["revision"])
    assert after["digest"] != before["digest"]


async def test_too_many_requests(api: Api) -> None:
    api.server.limits[False] = 0
    status, body, headers = await api.call("GET", CM)
    assert status == 429 and body["reason"] == "TooManyRequests" and headers["Retry-After"]


@pytest.mark.parametrize("method, path", [
    ("GET", f"{PODS}/victim/eviction"),
    ("GET", f"{PODS}/victim/binding"),
    ("DELETE", f"{DEPLOY}/d/scale"),
    ("DELETE", f"{PODS}/victim/status"),
    ("POST", f"{PODS}/victim/status"),
    ("PUT", f"{PODS}/victim/log"),
])
async def test_subresources_take_only_their_verbs(api: Api, method: str, path: str) -> None:
    await api.call("POST", PODS, pod("victim"))
    await api.call("POST", DEPLOY, deployment("d"))
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "victim"},
            "target": {"kind": "Node", "name": "evil"}}
    status, answer, _ = await api.call(method, path, body)
    assert (status, answer["reason"]) == (405, "MethodNotAllowed")
    got = (await api.call("GET", f"{PODS}/victim"))[1]
    assert "nodeName" not in got["spec"] and not got["metadata"].get("deletionTimestamp")
    assert (await api.call("GET", f"{DEPLOY}/d"))[0] == 200


async def test_terminating_namespace_survives_updates_and_its_successor_is_left_alone(
        api: Api, controllers: None) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t2"}}
    await api.call("POST", "/api/v1/namespaces", ns)
    await api.call("POST", "/api/v1/namespaces/t2/pods", pod("bound"))
    await api.call("POST", "/api/v1/namespaces/t2/pods/bound/binding", {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"},
        "target": {"kind": "Node", "name": "n1"}})
    assert (await api.call("DELETE", "/api/v1/namespaces/t2"))[0] == 202
    status, labelled, _ = await api.call("PATCH", "/api/v1/namespaces/t2",
                                         {"metadata": {"labels": {"x": "y"}}},
                                         content_type="application/merge-patch+json")
    assert status == 200 and labelled["status"]["phase"] == "Terminating"
    await asyncio.sleep(0.7)
    assert (await api.call("GET", "/api/v1/namespaces/t2"))[0] == 200  # the pod holds it
    await api.call("DELETE", "/api/v1/namespaces/t2/pods/bound", {"gracePeriodSeconds": 0})
    await _wait_gone(api, "/api/v1/namespaces/t2")
    assert (await api.call("POST", "/api/v1/namespaces", ns))[0] == 201
    assert (await api.call("POST", "/api/v1/namespaces/t2/configmaps",
                           configmap("newdata")))[0] == 201
    await asyncio.sleep(1.2)  # the old namespace's key may still come back
    assert (await api.call("GET", "/api/v1/namespaces/t2/configmaps/newdata"))[0] == 200
    assert (await api.call("GET", "/api/v1/namespaces/t2"))[1]["status"]["phase"] == "Active"


async def test_concurrent_unconditional_writes_all_land(api: Api) -> None:
    await api.call("POST", DEPLOY, deployment("busy", 1))
    merge = "application/merge-patch+json"

    async def label(i: int) -> int:
        return (await api.call("PATCH", f"{DEPLOY}/busy",
                               {"metadata": {"labels": {f"l{i}": "x"}}}, content_type=merge))[0]

    async def scale(i: int) -> int:
        return (await api.call("PATCH", f"{DEPLOY}/busy/scale", {"spec": {"replicas": i}},
                               content_type=merge))[0]

    codes = await asyncio.gather(*(label(i) for i in range(20)), *(scale(i) for i in range(20)))
    assert set(codes) == {200}
    labels = (await api.call("GET", f"{DEPLOY}/busy"))[1]["metadata"]["labels"]
    assert {f"l{i}" for i in range(20)} <= set(labels)


async def test_apply_shares_ownership_of_equal_values(api: Api) -> None:
    apply = "application/apply-patch+yaml"
    await api.call("PATCH", f"{CM}/shared?fieldManager=alice", configmap("shared", {"x": "1"}),
                   content_type=apply)
    status, body, _ = await api.call("PATCH", f"{CM}/shared?fieldManager=bob",
                                     configmap("shared", {"x": "1"}), content_type=apply)
    assert status == 200
    assert {m["manager"] for m in body["metadata"]["managedFields"]} == {"alice", "bob"}
    empty = configmap("shared")
    empty["data"] = {}
    await api.call("PATCH", f"{CM}/shared?fieldManager=alice", empty, content_type=apply)
    assert (await api.call("GET", f"{CM}/shared"))[1]["data"] == {"x": "1"}


async def test_abandoned_watch_is_released(api: Api) -> None:
    async with api.session.get(f"{api.url}{CM}?watch=1&resourceVersion=1") as answer:
        assert answer.status == 200
        await asyncio.sleep(0.2)
        assert _watchers(api) == 1
    for _ in range(50):
        if _watchers(api) == 0:
            break
        await asyncio.sleep(0.05)
    assert _watchers(api) == 0


def _watchers(api: Api) -> float:
    gauge = api.server.metrics.watches.labels("", "configmaps")
    return gauge._value.get()
