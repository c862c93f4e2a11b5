"""``corral join`` then ``corral agent`` as a process, as an operator runs them on a host:
the node joins with the token and CA pin, registers Ready with its own credential, runs a pod
(ProcessRuntime: no root, no Docker), and the API proxies the pod's logs and exec to the
agent's server over TLS verified against the cluster CA. SIGTERM stops the agent cleanly."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controlplane.auth.join import (
    CA_FILE,
    NODE_KUBECONFIG,
    SERVING_CERT,
    SERVING_KEY,
    join_main,
)
from controlplane.auth.kubeconfig import write_kubeconfig
from controlplane.client import NODES, PODS, ApiClient
from controlplane.localcluster import InProcessCluster
from tests.controllers.ctlharness import eventually

ROOT = Path(__file__).resolve().parents[2]
NODE = "proc-node"


@pytest.fixture
async def agent(cluster: InProcessCluster, tmp_path: Path) -> AsyncIterator[subprocess.Popen[str]]:
    creds = tmp_path / "creds"
    code = await asyncio.to_thread(join_main, [
        "--server", cluster.url, "--token", cluster.pki.join_token,
        "--ca-hash", cluster.pki.ca_fingerprint(), "--node-name", NODE,
        "--node-ip", "127.0.0.1", "--dir", str(creds)])
    assert code == 0
    assert (creds / NODE_KUBECONFIG).stat().st_mode & 0o077 == 0  # holds a private key
    process = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", "agent",
         "--kubeconfig", str(creds / NODE_KUBECONFIG),
         "--tls-cert-file", str(creds / SERVING_CERT),
         "--tls-private-key-file", str(creds / SERVING_KEY),
         "--client-ca-file", str(creds / CA_FILE), "--node-name", NODE,
         "--node-ip", "127.0.0.1", "--port", "0", "--runtime", "process",
         "--data-dir", str(tmp_path / "agent")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        subprocess.run([sys.executable, "-m", "controlplane.cli", "down", "--data-dir",
                        str(tmp_path)], cwd=ROOT, capture_output=True, timeout=60)


async def test_joined_agent_runs_pods_and_serves_logs_and_exec(
        client: ApiClient, cluster: InProcessCluster, agent: subprocess.Popen[str],
        tmp_path: Path) -> None:
    node = await eventually(lambda: _ready_node(client), timeout=30)
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == "process://corral"
    await client.create(PODS, "default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "greeter"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": "host", "command": ["sh", "-c",
                                                        "echo hello from a process; sleep 60"]}]}})
    await eventually(lambda: _running(client, "greeter"), timeout=30)
    logs = await eventually(lambda: _logs(cluster, "greeter"), timeout=10)
    assert "hello from a process" in logs
    kubeconfig = tmp_path / "admin.kubeconfig"
    write_kubeconfig(kubeconfig, server=cluster.url, ca_pem=cluster.pki.ca_pem,
                     cert_pem=cluster.pki.admin_cert_pem, key_pem=cluster.pki.admin_key_pem)
    out = await asyncio.to_thread(_exec, kubeconfig, "greeter", ["sh", "-c", "echo $((6*7))"])
    assert out.strip() == "42"

    await client.delete(PODS, "default", "greeter")
    await eventually(lambda: _gone(client, "greeter"), timeout=30)
    agent.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(agent.wait, 30) == 0
    output = agent.stdout.read() if agent.stdout else ""
    assert "Traceback" not in output


async def _ready_node(client: ApiClient) -> dict[str, Any] | None:
    try:
        node = await client.get(NODES, "", NODE)
    except Exception:  # noqa: BLE001 - not registered yet
        return None
    ready = any(c["type"] == "Ready" and c["status"] == "True"
                for c in node["status"].get("conditions", []))
    has_port = (node["status"].get("daemonEndpoints") or {}).get("kubeletEndpoint")
    return node if ready and has_port else None


async def _running(client: ApiClient, name: str) -> bool:
    pod = await client.get(PODS, "default", name)
    return (pod.get("status") or {}).get("phase") == "Running"


async def _logs(cluster: InProcessCluster, name: str) -> str:
    ssl = cluster.pki.client_ssl_context(cluster.pki.admin_cert_pem, cluster.pki.admin_key_pem)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{cluster.url}/api/v1/namespaces/default/pods/{name}/log",
                               ssl=ssl) as answer:
            return await answer.text() if answer.status == 200 else ""


def _exec(kubeconfig: Path, name: str, command: list[str]) -> str:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.stream import stream

    api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(kubeconfig)))
    return str(stream(api.connect_get_namespaced_pod_exec, name, "default", command=command,
                      stderr=True, stdin=False, stdout=True, tty=False))


async def _gone(client: ApiClient, name: str) -> bool:
    return all(p["metadata"]["name"] != name for p in (await client.list(PODS, "default")).items)
