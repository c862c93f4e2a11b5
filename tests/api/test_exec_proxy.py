"""pods/exec, pods/attach and pods/log end to end: an in-process API server proxying to a real
agent server (over a FakeRuntime) that a Node object points at, driven by aiohttp, the official
Python client's ``stream`` and the real kubectl.

The API presents its admin credential to the agent and verifies the agent's serving
certificate against the cluster CA; a node credential may not exec (verb "create")."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import KUBECTL, Api, Kubectl

from controlplane.auth.kubeconfig import write_kubeconfig
from controlplane.localcluster import InProcessCluster
from nodeagent import streams
from nodeagent.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    ContainerConfig,
    SandboxConfig,
)
from nodeagent.runtime.fake import ExecResult, FakeRuntime
from nodeagent.server import AgentServer, serving_ssl_context

IMAGE = "corral/base:1"
NODE = "node-1"
POD = "web"


@dataclass
class Node:
    runtime: FakeRuntime
    cid: str


@pytest.fixture
async def node(api: Api, tmp_path: Path) -> AsyncIterator[Node]:
    """An agent server on 127.0.0.1, its Node, and a running pod ``web`` (container ``main``,
    plus ``side``) bound to it."""
    pki = api.pki
    cert, key = pki.issue_server_cert(NODE, ["127.0.0.1"])
    (tmp_path / "agent.crt").write_bytes(cert)
    (tmp_path / "agent.key").write_bytes(key)
    runtime = FakeRuntime(lambda: 1_700_000_000.0, images={IMAGE})
    server = AgentServer(runtime, serving_ssl_context(pki.ca_pem, tmp_path / "agent.crt",
                                                      tmp_path / "agent.key"))
    port = await server.start("127.0.0.1", 0)
    status, body, _ = await api.call("POST", "/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    assert status == 201, body
    status, body, _ = await api.call("PATCH", f"/api/v1/nodes/{NODE}/status", {"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}},
        content_type="application/merge-patch+json")
    assert status == 200, body
    status, body, _ = await api.call("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD,
                     "annotations": {"kubectl.kubernetes.io/default-container": "main"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": IMAGE},
                                                   {"name": "side", "image": IMAGE}]}})
    assert status == 201, body
    uid = body["metadata"]["uid"]
    labels = {LABEL_POD_NAMESPACE: "default", LABEL_POD_NAME: POD, LABEL_POD_UID: uid}
    sandbox = await runtime.run_sandbox(SandboxConfig(uid, "default", POD, POD, labels=labels))
    cid = ""
    for name in ("main", "side"):
        created = await runtime.create_container(sandbox, ContainerConfig(name, IMAGE, labels={
            **labels, LABEL_CONTAINER_NAME: name, LABEL_ATTEMPT: "0"}))
        await runtime.start_container(created)
        cid = cid or created
    runtime.write_log(cid, "hello from main\nsecond line\n")
    runtime.exec_results[("sh", "-c", "echo out; exit 3")] = ExecResult(3, b"out\n")
    runtime.exec_results[("echo", "hi")] = ExecResult(0, b"hi\n")
    runtime.exec_results[("cat",)] = lambda cmd, data: ExecResult(0, data)
    yield Node(runtime, cid)
    await server.stop()


def exec_path(*command: str, **flags: str) -> str:
    query = "&".join([f"command={c}" for c in command] + [f"{k}={v}" for k, v in flags.items()])
    return f"/api/v1/namespaces/default/pods/{POD}/exec?{query}"


async def ws_exchange(session: aiohttp.ClientSession, url: str, send: list[bytes] = ()
                      ) -> tuple[str | None, dict[int, bytes]]:
    got: dict[int, bytes] = {}
    async with session.ws_connect(url, protocols=(streams.PROTOCOL_V5, streams.PROTOCOL_V4)
                                  ) as ws:
        for message in send:
            await ws.send_bytes(message)
        async for msg in ws:
            stream, data = streams.decode(msg.data)
            got[stream] = got.get(stream, b"") + data
        return ws.protocol, got


async def test_exec_through_the_api(api: Api, node: Node) -> None:
    protocol, got = await ws_exchange(
        api.session, api.url + exec_path("sh", "-c", "echo%20out%3B%20exit%203", stdout="true",
                                         stderr="true"))
    assert protocol == streams.PROTOCOL_V5 and got[1] == b"out\n"
    assert json.loads(got[3])["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert node.runtime.execs == [(node.cid, ("sh", "-c", "echo out; exit 3"))]
    # stdin, closed by v5's close message, through the relay.
    _, got = await ws_exchange(api.session, api.url + exec_path("cat", stdin="true",
                                                                stdout="true"),
                               send=[b"\x00piped", b"\xff\x00"])
    assert got[1] == b"piped" and json.loads(got[3])["status"] == "Success"


async def test_attach_through_the_api(api: Api, node: Node) -> None:
    url = f"{api.url}/api/v1/namespaces/default/pods/{POD}/attach?container=main&stdout=1"
    async with api.session.ws_connect(url, protocols=(streams.PROTOCOL_V5,)) as ws:
        await asyncio.sleep(0.2)
        node.runtime.write_log(node.cid, "live\n")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert streams.decode(msg.data) == (1, b"live\n")


@pytest.mark.parametrize("path, code, message", [
    (exec_path(stdout="true"), 400, "at least one command"),
    (exec_path("ls", stdout="true", container="nope"), 400, "container nope is not valid"),
    (exec_path("ls", stdout="true").replace(POD, "ghost"), 404, "not found"),
    (exec_path("ls"), 400, "at least one of stdin, stdout, stderr"),  # the agent's words
])
async def test_exec_refusals_are_statuses(api: Api, node: Node, path: str, code: int,
                                          message: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        async with api.session.ws_connect(api.url + path, protocols=(streams.PROTOCOL_V5,)):
            pass
    assert failed.value.status == code
    status, body, _ = await api.call("POST", path, headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": streams.PROTOCOL_V5})
    assert status == code and body["kind"] == "Status" and message in body["message"]


async def test_exec_without_upgrade_or_host(api: Api, node: Node) -> None:
    status, body, _ = await api.call("POST", exec_path("ls", stdout="true"))
    assert status == 400 and "WebSocket upgrade" in body["message"]
    assert "SPDY is not supported" in body["message"]
    status, body, _ = await api.call("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unbound"},
        "spec": {"containers": [{"name": "main", "image": IMAGE}]}})
    assert status == 201
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        async with api.session.ws_connect(
                api.url + exec_path("ls", stdout="1").replace(POD, "unbound")):
            pass
    assert failed.value.status == 400


async def test_a_node_may_not_exec(api: Api, node: Node) -> None:
    cert, key = api.pki.issue_client_cert(f"system:node:{NODE}", ["system:nodes"])
    context = api.pki.client_ssl_context(cert, key)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
            async with session.ws_connect(api.url + exec_path("ls", stdout="1"),
                                          protocols=(streams.PROTOCOL_V5,)):
                pass
        assert failed.value.status == 403
        # ... while it may still read logs (a read), as Kubernetes' node authorizer allows.
        async with session.get(f"{api.url}/api/v1/namespaces/default/pods/{POD}/log") as answer:
            assert answer.status == 200


async def test_discovery_lists_exec_and_attach(api: Api) -> None:
    status, body, _ = await api.call("GET", "/api/v1")
    found = {r["name"]: r for r in body["resources"]}
    assert found["pods/exec"]["verbs"] == ["create", "get"]
    assert found["pods/attach"]["kind"] == "PodAttachOptions"


# -- the official Python client and kubectl -----------------------------------------------------

def python_client(api: Api, tmp_path: Path) -> Any:
    from kubernetes import client

    for name, data in (("ca.crt", api.pki.ca_pem), ("admin.crt", api.pki.admin_cert_pem),
                       ("admin.key", api.pki.admin_key_pem)):
        (tmp_path / name).write_bytes(data)
    config = client.Configuration()
    config.host = api.url
    config.ssl_ca_cert = str(tmp_path / "ca.crt")
    config.cert_file = str(tmp_path / "admin.crt")
    config.key_file = str(tmp_path / "admin.key")
    return client.CoreV1Api(client.ApiClient(config))


async def test_python_client_stream(api: Api, node: Node, tmp_path: Path) -> None:
    from kubernetes.stream import stream

    core = python_client(api, tmp_path)

    def run() -> tuple[str, int | None]:
        out = stream(core.connect_get_namespaced_pod_exec, POD, "default", command=["echo", "hi"],
                     container="main", stderr=True, stdin=False, stdout=True, tty=False)
        resp = stream(core.connect_get_namespaced_pod_exec, POD, "default",
                      command=["sh", "-c", "echo out; exit 3"], stderr=True, stdin=False,
                      stdout=True, tty=False, _preload_content=False)
        resp.run_forever(timeout=10)
        return out, resp.returncode

    out, code = await asyncio.to_thread(run)
    assert out == "hi\n" and code == 3


@pytest.fixture
def kubectl_in_process(api: Api, tmp_path: Path, require: Callable[[str], None]) -> Kubectl:
    if shutil.which(KUBECTL) is None:
        require("kubectl")
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, server=api.url, ca_pem=api.pki.ca_pem,
                     cert_pem=api.pki.admin_cert_pem, key_pem=api.pki.admin_key_pem)
    return Kubectl(str(path), str(tmp_path / "kubecache"))


@pytest.mark.kubectl
async def test_kubectl_exec_and_logs(kubectl_in_process: Kubectl, node: Node) -> None:
    kubectl = kubectl_in_process
    done = await asyncio.to_thread(kubectl, "exec", POD, "--", "echo", "hi")
    assert done.stdout == "hi\n"
    done = await asyncio.to_thread(kubectl, "exec", POD, "-c", "main", "--", "sh", "-c",
                                   "echo out; exit 3", check=False)
    assert done.returncode == 3 and done.stdout == "out\n", done.stderr
    done = await asyncio.to_thread(kubectl, "exec", "-i", POD, "--", "cat", stdin="typed\n")
    assert done.stdout == "typed\n"
    done = await asyncio.to_thread(kubectl, "logs", POD, "--tail=1")
    assert done.stdout == "second line\n"
    done = await asyncio.to_thread(kubectl, "exec", POD, "-c", "nope", "--", "ls", check=False)
    assert done.returncode != 0 and "container nope is not valid" in done.stderr
    # A refusal of the agent reaches kubectl too (through its SPDY retry).
    node.runtime.exit_container(node.cid, 0)
    done = await asyncio.to_thread(kubectl, "exec", POD, "--", "ls", check=False)
    assert done.returncode != 0 and 'container "main" in pod "web" is not running' in \
        done.stderr, done.stderr


def test_agent_ssl_verifies_the_agent(cluster: InProcessCluster) -> None:
    """The API's context for agents checks their certificate and presents the admin's."""
    from controlplane.api.handlers import AGENT_SSL

    context = cluster.servers[cluster.url].app()[AGENT_SSL]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
