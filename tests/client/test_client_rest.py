"""The API client against in-process API servers over HTTPS: verbs, errors, watch, failover."""

from __future__ import annotations

import asyncio
import base64
from contextlib import aclosing
from pathlib import Path

import pytest
import yaml

from clientharness import configmap, dead_url, pod

from controlplane.localcluster import InProcessCluster as Cluster

from controlplane.auth.kubeconfig import write_kubeconfig
from controlplane.client import (
    CONFIGMAPS,
    DEPLOYMENTS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    AlreadyExists,
    ApiClient,
    ApiError,
    Conflict,
    Expired,
    Forbidden,
    Invalid,
    NotFound,
    Resource,
    Unauthorized,
    Unavailable,
)
from controlplane.client.rest import error_from_status


@pytest.mark.parametrize("res,namespace,name,sub,path", [
    (PODS, "default", "", "", "/api/v1/namespaces/default/pods"),
    (PODS, "", "", "", "/api/v1/pods"),
    (PODS, "ns", "web", "binding", "/api/v1/namespaces/ns/pods/web/binding"),
    (NODES, "ignored", "n1", "status", "/api/v1/nodes/n1/status"),
    (NAMESPACES, "", "kube-system", "", "/api/v1/namespaces/kube-system"),
    (DEPLOYMENTS, "ns", "d", "scale", "/apis/apps/v1/namespaces/ns/deployments/d/scale"),
    (LEASES, "", "", "", "/apis/coordination.k8s.io/v1/leases"),
    (CONFIGMAPS, "ns", "a/../b", "", "/api/v1/namespaces/ns/configmaps/a%2F..%2Fb"),
])
def test_resource_paths(res: Resource, namespace: str, name: str, sub: str, path: str) -> None:
    assert res.path(namespace, name, sub) == path


def test_resource_subresource_needs_a_name() -> None:
    with pytest.raises(ValueError):
        PODS.path("default", "", "status")


@pytest.mark.parametrize("reason,code,cls", [
    ("NotFound", 404, NotFound), ("AlreadyExists", 409, AlreadyExists), ("Conflict", 409, Conflict),
    ("Expired", 410, Expired), ("Gone", 410, Expired), ("Invalid", 422, Invalid),
    ("Forbidden", 403, Forbidden), ("Unauthorized", 401, Unauthorized),
    ("ServiceUnavailable", 503, Unavailable), ("", 404, NotFound), ("", 410, Expired),
    ("BadRequest", 400, ApiError), ("TooManyRequests", 429, ApiError),
])
def test_error_class_from_status(reason: str, code: int, cls: type[ApiError]) -> None:
    error = error_from_status({"kind": "Status", "reason": reason, "code": code, "message": "m"})
    assert type(error) is cls
    assert (error.code, error.reason, error.message) == (code, reason, "m")


async def test_crud(client: ApiClient) -> None:
    created = await client.create(CONFIGMAPS, "default", configmap("a", {"k": "1"}))
    assert created["metadata"]["uid"] and created["data"] == {"k": "1"}
    got = await client.get(CONFIGMAPS, "default", "a")
    assert got["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    got["data"]["k"] = "2"
    updated = await client.update(CONFIGMAPS, got)
    assert updated["data"] == {"k": "2"}
    got["data"]["k"] = "3"  # still the old resourceVersion: a lost compare-and-swap
    with pytest.raises(Conflict) as lost:
        await client.update(CONFIGMAPS, got)
    assert lost.value.code == 409

    with pytest.raises(AlreadyExists):
        await client.create(CONFIGMAPS, "default", configmap("a"))
    with pytest.raises(Conflict):
        await client.delete(CONFIGMAPS, "default", "a", uid="not-its-uid")
    await client.delete(CONFIGMAPS, "default", "a",
                        resource_version=updated["metadata"]["resourceVersion"])
    with pytest.raises(NotFound) as missing:
        await client.get(CONFIGMAPS, "default", "a")
    assert (missing.value.code, missing.value.reason) == (404, "NotFound")
    with pytest.raises(NotFound):
        await client.delete(CONFIGMAPS, "default", "a")


async def test_invalid_object_is_invalid(client: ApiClient) -> None:
    body = pod("p")
    body["spec"]["containers"] = []
    with pytest.raises(Invalid) as bad:
        await client.create(PODS, "default", body)
    assert bad.value.code == 422 and bad.value.status["details"]["causes"]


async def test_list_follows_continue_tokens_and_selects(client: ApiClient) -> None:
    for n in range(5):
        await client.create(CONFIGMAPS, "default",
                            configmap(f"cm{n}", labels={"parity": "even" if n % 2 == 0 else "odd"}))
    whole = await client.list(CONFIGMAPS, "default")
    paged = await client.list(CONFIGMAPS, "default", limit=2)
    assert [o["metadata"]["name"] for o in paged.items] == [f"cm{n}" for n in range(5)]
    assert paged.items == whole.items and int(paged.resource_version) > 0
    even = await client.list(CONFIGMAPS, "default", label_selector="parity=even")
    assert [o["metadata"]["name"] for o in even.items] == ["cm0", "cm2", "cm4"]
    named = await client.list(CONFIGMAPS, "", field_selector="metadata.name=cm3")
    assert [o["metadata"]["name"] for o in named.items] == ["cm3"]


@pytest.mark.parametrize("patch_type,patch", [
    ("merge", {"data": {"b": "2"}}),
    ("strategic", {"data": {"b": "2"}}),
    ("json", [{"op": "add", "path": "/data/b", "value": "2"}]),
    ("apply", {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "p", "namespace": "default"}, "data": {"b": "2"}}),
])
async def test_patch_types(client: ApiClient, patch_type: str, patch: object) -> None:
    await client.create(CONFIGMAPS, "default", configmap("p", {"a": "1"}))
    patched = await client.patch(CONFIGMAPS, "default", "p", patch, patch_type=patch_type,
                                 field_manager="tester")
    assert patched["data"] == {"a": "1", "b": "2"}
    managers = {m["manager"] for m in patched["metadata"]["managedFields"]}
    assert "tester" in managers


async def test_apply_conflict_and_force(client: ApiClient) -> None:
    mine = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "owned", "namespace": "default"}, "data": {"k": "mine"}}
    await client.patch(CONFIGMAPS, "default", "owned", mine, patch_type="apply",
                       field_manager="me")
    theirs = {**mine, "data": {"k": "theirs"}}
    with pytest.raises(Conflict):
        await client.patch(CONFIGMAPS, "default", "owned", theirs, patch_type="apply",
                           field_manager="them")
    taken = await client.patch(CONFIGMAPS, "default", "owned", theirs, patch_type="apply",
                               field_manager="them", force=True)
    assert taken["data"] == {"k": "theirs"}


async def test_unknown_patch_type_is_refused(client: ApiClient) -> None:
    with pytest.raises(ValueError):
        await client.patch(CONFIGMAPS, "default", "p", {}, patch_type="xml")


async def test_status_subresource(client: ApiClient) -> None:
    await client.create(PODS, "default", pod("s"))
    patched = await client.patch(PODS, "default", "s", {"status": {"phase": "Running"}},
                                 subresource="status")
    assert patched["status"]["phase"] == "Running"
    patched["status"]["phase"] = "Succeeded"
    updated = await client.update(PODS, patched, subresource="status")
    assert updated["status"]["phase"] == "Succeeded"


async def test_bind(client: ApiClient) -> None:
    await client.create(PODS, "default", pod("b"))
    await client.bind("default", "b", "node-1")
    assert (await client.get(PODS, "default", "b"))["spec"]["nodeName"] == "node-1"
    with pytest.raises(Conflict):
        await client.bind("default", "b", "node-2")
    with pytest.raises(NotFound):
        await client.bind("default", "nobody", "node-1")
    first = await client.create(PODS, "default", pod("again"))
    await client.delete(PODS, "default", "again", grace_period=0)
    await client.create(PODS, "default", pod("again"))  # the same name, another pod
    with pytest.raises(Conflict):
        await client.bind("default", "again", "node-1", uid=first["metadata"]["uid"])
    assert not (await client.get(PODS, "default", "again"))["spec"].get("nodeName")


async def test_identity_errors(cluster: Cluster) -> None:
    anonymous = ApiClient([cluster.url], cluster.pki.client_ssl_context())
    async with anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.get(NAMESPACES, "", "default")
    cert, key = cluster.pki.issue_client_cert("system:node:n1", ["system:nodes"])
    async with ApiClient([cluster.url], cluster.pki.client_ssl_context(cert, key)) as node:
        await node.get(NAMESPACES, "", "default")  # nodes may read
        with pytest.raises(Forbidden):
            await node.create(CONFIGMAPS, "default", configmap("no"))


async def test_watch_events_in_order(client: ApiClient) -> None:
    start = (await client.list(CONFIGMAPS, "default")).resource_version
    events = client.watch(CONFIGMAPS, "default", resource_version=start, bookmarks=False)
    await client.create(CONFIGMAPS, "default", configmap("w", {"v": "1"}))
    await client.patch(CONFIGMAPS, "default", "w", {"data": {"v": "2"}})
    await client.delete(CONFIGMAPS, "default", "w")
    seen = []
    async with aclosing(events):
        async for kind, obj in events:
            seen.append((kind, obj["metadata"]["name"], obj["data"]["v"]))
            if kind == "DELETED":
                break
    assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]


async def test_watch_bookmarks_and_selectors(client: ApiClient) -> None:
    start = (await client.list(CONFIGMAPS, "")).resource_version
    await client.create(CONFIGMAPS, "default", configmap("other"))
    await client.create(CONFIGMAPS, "default", configmap("mine", labels={"app": "x"}))
    kinds = []
    events = client.watch(CONFIGMAPS, resource_version=start, label_selector="app=x")
    async with aclosing(events):
        async for kind, obj in events:
            kinds.append((kind, obj["metadata"].get("name")))
            if kind == "BOOKMARK":
                assert int(obj["metadata"]["resourceVersion"]) > int(start)
                break
    assert kinds == [("ADDED", "mine"), ("BOOKMARK", None)]


async def test_watch_ends_at_the_server_timeout(client: ApiClient) -> None:
    start = (await client.list(CONFIGMAPS, "")).resource_version
    events = client.watch(CONFIGMAPS, resource_version=start, timeout_seconds=1,
                          bookmarks=False)
    got = await asyncio.wait_for(_collect(events), 5)
    assert got == []


async def test_watch_from_compacted_history_is_expired(cluster: Cluster,
                                                       client: ApiClient) -> None:
    start = (await client.list(CONFIGMAPS, "")).resource_version
    made = await client.create(CONFIGMAPS, "default", configmap("c1"))
    await client.create(CONFIGMAPS, "default", configmap("c2"))
    await cluster.store.compact(int(made["metadata"]["resourceVersion"]) + 1)
    with pytest.raises(Expired) as gone:
        await _collect(client.watch(CONFIGMAPS, resource_version=start))
    assert gone.value.code == 410


async def _collect(events):  # type: ignore[no-untyped-def]
    async with aclosing(events):
        return [event async for event in events]


async def test_fails_over_from_a_dead_controller_and_remembers(cluster: Cluster) -> None:
    async with cluster.admin_client([dead_url(), cluster.url]) as client:
        assert (await client.get(NAMESPACES, "", "default"))["metadata"]["name"] == "default"
        assert client.url == cluster.url
        await client.create(CONFIGMAPS, "default", configmap("via-second"))
        assert client.url == cluster.url


async def test_no_controller_answers_unavailable(cluster: Cluster) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with cluster.admin_client([dead_url(), dead_url()]) as client:
        with pytest.raises(Unavailable) as down:
            await client.get(NAMESPACES, "", "default")
    assert down.value.code == 503 and "127.0.0.1" in down.value.message
    assert loop.time() - started < 5


async def test_a_controller_stopped_midway(cluster: Cluster) -> None:
    first = cluster.url
    second = await cluster.start_server()
    async with cluster.admin_client([first, second]) as client:
        await client.create(CONFIGMAPS, "default", configmap("before"))
        assert client.url == first
        start = (await client.list(CONFIGMAPS, "default")).resource_version
        events = client.watch(CONFIGMAPS, "default", resource_version=start)
        watching = asyncio.create_task(_collect(events))
        await asyncio.sleep(0.1)
        await cluster.stop_server(first)
        with pytest.raises(Unavailable):  # the stream broke: the caller re-watches
            await asyncio.wait_for(watching, 5)
        got = await client.get(CONFIGMAPS, "default", "before")
        assert got["metadata"]["name"] == "before" and client.url == second
        await client.create(CONFIGMAPS, "default", configmap("after"))
        names = [o["metadata"]["name"] for o in (await client.list(CONFIGMAPS, "default")).items]
        assert names == ["after", "before"]


async def test_from_kubeconfig(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "admin.kubeconfig"
    write_kubeconfig(path, server=cluster.url, ca_pem=cluster.pki.ca_pem,
                     cert_pem=cluster.pki.admin_cert_pem, key_pem=cluster.pki.admin_key_pem)
    async with ApiClient.from_kubeconfig(path) as client:
        assert client.urls == [cluster.url]
        await client.create(CONFIGMAPS, "default", configmap("from-kubeconfig"))

    # Certificates as files next to the kubeconfig, as kubectl also accepts.
    doc = yaml.safe_load(path.read_text())
    for section, field in (("clusters", "certificate-authority"),
                           ("users", "client-certificate"), ("users", "client-key")):
        body = doc[section][0][section[:-1]]
        (tmp_path / field).write_bytes(base64.b64decode(body.pop(f"{field}-data")))
        body[field] = field
    path.write_text(yaml.safe_dump(doc))
    async with ApiClient.from_kubeconfig(path) as client:
        await client.get(CONFIGMAPS, "default", "from-kubeconfig")


@pytest.mark.parametrize("text", ["not: [yaml", "{}", "current-context: nowhere\ncontexts: []\n"])
def test_bad_kubeconfig_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.kubeconfig"
    path.write_text(text)
    with pytest.raises(ValueError, match="bad.kubeconfig"):
        ApiClient.from_kubeconfig(path)


async def test_client_outside_its_context_is_refused() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await ApiClient(["https://127.0.0.1:1"]).get(NAMESPACES, "", "default")
