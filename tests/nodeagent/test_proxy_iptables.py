"""The Service proxy's rules for real (privileged): a "node" network namespace with a bridge to
two backend namespaces, each running a tiny TCP server on :8080 that answers with its name; the
rules for the ClusterIP Service 10.96.10.10:80 applied inside the node namespace, and clients
in the node namespace (the OUTPUT path) connecting to it.

Every namespace has a unique name and is deleted in the fixture's ``finally`` (the servers are
killed first); the rules live inside the node namespace and go with it. No packet is sent to an
address outside the namespaces created here. Clients and servers are Python sockets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from nodeagent.proxy import IptablesApplier, build
from nodeagent.proxy.rules import SEP_PREFIX, SVC_PREFIX, sep_chain

pytestmark = pytest.mark.privileged

CLUSTER_IP = "10.96.10.10"
BACKENDS = {"b1": "10.244.1.2", "b2": "10.244.1.3"}

SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(64)
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(sys.argv[1].encode())
    conn.close()
"""

CLIENT = r"""
import json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
answers = []
for _ in range(count):
    try:
        with socket.create_connection((host, port), timeout=2) as c:
            answers.append(c.recv(64).decode())
    except ConnectionRefusedError:
        answers.append("refused")
    except OSError as exc:
        answers.append(type(exc).__name__)
print(json.dumps(answers))
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Node:
    netns: str
    backends: dict[str, str]  # name -> its namespace

    def connect(self, count: int, *, source: str | None = None) -> list[str]:
        """``count`` connections to the Service from the node (or from the backend
        namespace ``source``, through PREROUTING); each one's answer or error."""
        out = sh("ip", "netns", "exec", source or self.netns, sys.executable, "-c", CLIENT,
                 CLUSTER_IP, "80", str(count)).stdout
        return json.loads(out)

    def save(self) -> str:
        return sh("ip", "netns", "exec", self.netns, "iptables-save").stdout


@pytest.fixture
def node(require: Callable[[str], None]) -> Iterator[Node]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in
                                    ("ip", "iptables", "iptables-restore", "iptables-save")):
        require("root, ip netns and iptables")
    tag = uuid.uuid4().hex[:8]
    created: list[str] = []
    servers: list[subprocess.Popen[str]] = []

    def make_netns(role: str) -> str:
        name = f"ct-{role}-{tag}"
        sh("ip", "netns", "add", name)
        created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    try:
        host = make_netns("node")
        sh("ip", "-n", host, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", host, "addr", "add", "10.244.1.1/24", "dev", "br0")
        sh("ip", "-n", host, "link", "set", "br0", "up")
        sh("ip", "netns", "exec", host, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        # ClusterIPs need a route out of the node for the nat OUTPUT hook to see them.
        sh("ip", "-n", host, "route", "add", "10.96.0.0/12", "dev", "br0")
        for index, (name, ip) in enumerate(BACKENDS.items()):
            backend = make_netns(name)
            veth = f"vp{index}{tag[:6]}"
            sh("ip", "-n", host, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
               "netns", backend)
            sh("ip", "-n", host, "link", "set", veth, "master", "br0", "up")
            # As the kubelet's hairpin-veth mode: a Pod reaching itself through its Service
            # is bridged back out of the port it came in on.
            sh("ip", "-n", host, "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
            sh("ip", "-n", backend, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", backend, "link", "set", "eth0", "up")
            sh("ip", "-n", backend, "route", "add", "default", "via", "10.244.1.1")
            server = subprocess.Popen(["ip", "netns", "exec", backend, sys.executable, "-c",
                                       SERVER, name], stdout=subprocess.PIPE, text=True)
            servers.append(server)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield Node(host, {name: f"ct-{name}-{tag}" for name in BACKENDS})
    finally:
        for server in servers:
            server.kill()
            server.wait()
        for name in reversed(created):
            sh("ip", "netns", "delete", name, check=False)


def service(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": CLUSTER_IP, "ports": [{"name": "http", "port": 80}],
                     **spec}}


def endpoints(*names: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": "web"},
            "subsets": [{"addresses": [{"ip": BACKENDS[n]} for n in names],
                         "ports": [{"name": "http", "port": 8080}]}] if names else []}


def rules(*names: str, **spec: Any) -> Any:
    return build([service(**spec)], [endpoints(*names)], cluster_cidr="10.244.0.0/16")


async def test_cluster_ip_balances_follows_endpoints_and_tears_down(node: Node) -> None:
    applier = IptablesApplier(host_netns=node.netns)
    try:
        assert await applier.apply(rules("b1", "b2"))
        assert not await applier.apply(rules("b1", "b2"))  # unchanged: nothing written
        answers = node.connect(40)
        assert set(answers) == {"b1", "b2"}, answers

        # One endpoint gone: only the other answers, and its old SEP chain is deleted.
        assert await applier.apply(rules("b2"))
        assert set(node.connect(10)) == {"b2"}
        nat = await applier.chains("nat")
        assert sep_chain("default/web:http", "TCP", "10.244.1.2:8080") not in nat
        assert sep_chain("default/web:http", "TCP", "10.244.1.3:8080") in nat

        # No endpoints: refused at once (REJECT in the filter table), not a timeout.
        assert await applier.apply(rules())
        started = time.monotonic()
        assert node.connect(3) == ["refused"] * 3
        assert time.monotonic() - started < 3
        assert not [c for c in await applier.chains("nat") if c.startswith(SVC_PREFIX)]

        # Back again; the jumps exist once each, however often we applied.
        assert await applier.apply(rules("b1", "b2"))
        assert set(node.connect(40)) == {"b1", "b2"}
        saved = node.save()
        assert saved.count("-A PREROUTING -j CORRAL-SERVICES") == 1
        assert saved.count("-A OUTPUT -j CORRAL-SERVICES") == 1
        assert saved.count("-A POSTROUTING -j CORRAL-PROXY-POSTROUTING") == 1

        # A forced apply (resync) repairs a flushed chain.
        sh("ip", "netns", "exec", node.netns, "iptables", "-t", "nat", "-F", "CORRAL-SERVICES")
        assert await applier.apply(rules("b1", "b2"), force=True)
        assert set(node.connect(40)) == {"b1", "b2"}
    finally:
        await applier.teardown()
    assert "CORRAL" not in node.save()
    assert node.connect(1)[0] not in BACKENDS


async def test_session_affinity_sticks_to_one_backend(node: Node) -> None:
    applier = IptablesApplier(host_netns=node.netns)
    try:
        await applier.apply(rules("b1", "b2", sessionAffinity="ClientIP",
                                  sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}}))
        answers = node.connect(30)
        assert len(set(answers)) == 1 and answers[0] in BACKENDS, answers
    finally:
        await applier.teardown()
    saved = node.save()
    assert SEP_PREFIX not in saved and "CORRAL" not in saved


async def test_pods_reach_the_service_through_prerouting_hairpin_included(node: Node) -> None:
    """From a backend (a Pod): traffic is routed via the gateway, DNATed in PREROUTING; the
    connection back to the sender itself works because the SEP chain marks it for masquerade."""
    applier = IptablesApplier(host_netns=node.netns)
    try:
        await applier.apply(rules("b1", "b2"))
        answers = node.connect(40, source=node.backends["b1"])
        assert set(answers) == {"b1", "b2"}, answers
    finally:
        await applier.teardown()
