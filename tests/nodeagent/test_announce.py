"""LoadBalancer IP announcement: the election as tables (pure), the gratuitous ARP frames, then
for real (privileged) on a segment of network namespaces: two "nodes", a client and a backend
on one bridge; the controller gives a Service the IP, the proxy's rules for it are applied in
both nodes, an announcer runs for each; the client's connection to the IP reaches the backend
through the elected node, and through the other once the elected one goes NotReady.

Every namespace has a unique name and is deleted in the fixture's ``finally`` (the backend's
server is killed first). Addresses are TEST-NET-2 (198.51.100.0/24), only inside them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from controlplane.client import NODES, SERVICES, ApiClient
from controlplane.controllers.servicelb import IPPool, ServiceLBController
from nodeagent.network import garp
from nodeagent.proxy.announce import (
    EXCLUDE_LABEL,
    LB_DEVICE,
    Announcer,
    announced_ips,
    candidates,
    elect,
    elected_ips,
)
from nodeagent.proxy.iptables import IptablesApplier
from nodeagent.proxy.rules import build
from tests.controllers.ctlharness import eventually, running

Obj = dict[str, Any]


def node(name: str, ready: str = "True", **labels: str) -> Obj:
    return {"metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": ready}]}}


def lb_service(*ips: str, name: str = "web", **spec: Any) -> Obj:
    return {"metadata": {"namespace": "default", "name": name},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", **spec},
            "status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}}}


def test_candidates_are_ready_nodes_not_excluded() -> None:
    nodes = [node("a"), node("b", ready="False"), node("c", ready="Unknown"),
             node("d", **{EXCLUDE_LABEL: ""}), {"metadata": {"name": "e"}}, node("f")]
    assert candidates(nodes) == ["a", "f"]


def test_election_is_deterministic_spread_and_moves_only_the_lost_nodes_ips() -> None:
    names = ["n1", "n2", "n3"]
    ips = [f"198.19.255.{i}" for i in range(1, 101)]
    owner = {ip: elect(ip, names) for ip in ips}
    assert owner == {ip: elect(ip, list(reversed(names))) for ip in ips}  # order is irrelevant
    assert all(20 <= list(owner.values()).count(n) for n in names)  # spread over all three
    after = {ip: elect(ip, ["n1", "n3"]) for ip in ips}
    assert {ip for ip in ips if after[ip] != owner[ip]} == \
        {ip for ip in ips if owner[ip] == "n2"}
    assert elect("198.19.255.1", []) is None


def test_only_corral_load_balancers_ips_are_announced() -> None:
    assert announced_ips(lb_service("198.19.255.2", "198.19.255.1")) == \
        ("198.19.255.1", "198.19.255.2")
    assert announced_ips(lb_service("198.19.255.1", loadBalancerClass="example.com/lb")) == ()
    assert announced_ips({**lb_service("198.19.255.1"), "spec": {"type": "ClusterIP"}}) == ()
    services = [lb_service(f"198.19.255.{i}", name=f"s{i}") for i in range(1, 21)]
    nodes = [node("n1"), node("n2"), node("n3", ready="False")]
    held = {n: elected_ips(n, services, nodes) for n in ("n1", "n2", "n3")}
    assert held["n3"] == set() and held["n1"] and held["n2"]
    assert held["n1"] | held["n2"] == {f"198.19.255.{i}" for i in range(1, 21)}
    assert not held["n1"] & held["n2"]


def test_gratuitous_arp_frames() -> None:
    mac = bytes.fromhex("020000000001")
    request, reply = garp.frames(mac, "198.51.100.200")
    ip = bytes([198, 51, 100, 200])
    header = b"\xff" * 6 + mac + b"\x08\x06" + bytes.fromhex("0001 0800 06 04".replace(" ", ""))
    assert request == header + b"\x00\x01" + mac + ip + b"\x00" * 6 + ip
    # Linux counts a reply as gratuitous only with the target MAC the sender's.
    assert reply == header + b"\x00\x02" + mac + ip + mac + ip
    with pytest.raises(ValueError):
        garp.frames(b"\x02", "198.51.100.200")
    with pytest.raises(ValueError):
        garp.frames(mac, "fd00::1")


# -- for real -------------------------------------------------------------------------------------

NODE_IPS = {"node-a": "198.51.100.11", "node-b": "198.51.100.12"}
CLIENT_IP, BACKEND_IP, LB_IP = "198.51.100.2", "198.51.100.50", "198.51.100.200"

#: Answers each connection with the address it came from: the node that masqueraded it.
SERVER = r"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(16)
print("ready", flush=True)
while True:
    conn, peer = s.accept()
    conn.sendall(peer[0].encode())
    conn.close()
"""

CLIENT = r"""
import json, socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as c:
        print(json.dumps(c.recv(64).decode()))
except OSError as exc:
    print(json.dumps(type(exc).__name__))
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Segment:
    netns: dict[str, str]  # role ("node-a", "node-b", "client", "backend") -> namespace

    async def connect(self) -> str:
        """One connection from the client to the LoadBalancer IP: who answered, or the error."""
        done = await asyncio.to_thread(sh, "ip", "netns", "exec", self.netns["client"],
                                       sys.executable, "-c", CLIENT, LB_IP, "80")
        return str(json.loads(done.stdout))

    def mac(self, role: str) -> str:
        shown = sh("ip", "-n", self.netns[role], "-o", "link", "show", "dev", "eth0").stdout
        return shown.split("link/ether ")[1].split()[0]

    def client_neighbour(self) -> str:
        """The MAC the client has for the LoadBalancer IP ("" when none)."""
        shown = sh("ip", "-n", self.netns["client"], "neigh", "show", LB_IP).stdout.split()
        return shown[shown.index("lladdr") + 1] if "lladdr" in shown else ""

    def has_device(self, role: str) -> bool:
        return sh("ip", "-n", self.netns[role], "link", "show", "dev", LB_DEVICE,
                  check=False).returncode == 0


@pytest.fixture
def segment(require: Callable[[str], None]) -> Iterator[Segment]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in
                                    ("ip", "iptables", "iptables-restore", "iptables-save")):
        require("root, ip netns and iptables")
    tag = uuid.uuid4().hex[:8]
    created: list[str] = []
    server: subprocess.Popen[str] | None = None

    def make_netns(role: str) -> str:
        name = f"ca-{role}-{tag}"
        sh("ip", "netns", "add", name)
        created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    try:
        switch = make_netns("sw")
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        addresses = {**NODE_IPS, "client": CLIENT_IP, "backend": BACKEND_IP}
        netns = {}
        for index, (role, ip) in enumerate(addresses.items()):
            netns[role] = make_netns(role)
            port = f"vs{index}{tag[:6]}"
            sh("ip", "-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", netns[role])
            sh("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", netns[role], "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", netns[role], "link", "set", "eth0", "up")
        for role in NODE_IPS:
            # A node forwards the DNATed connection back out of eth0, to the backend; no ICMP
            # redirect should tell the client a shorter way.
            sh("ip", "netns", "exec", netns[role], "sysctl", "-q", "-w",
               "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
               "net.ipv4.conf.eth0.send_redirects=0")
        server = subprocess.Popen(["ip", "netns", "exec", netns["backend"], sys.executable,
                                   "-c", SERVER], stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield Segment(netns)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for name in reversed(created):
            sh("ip", "netns", "delete", name, check=False)


async def set_ready(client: ApiClient, name: str, ready: bool) -> None:
    await client.patch(NODES, "", name, {"status": {"conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}}, subresource="status")


@pytest.mark.privileged
async def test_the_elected_node_answers_and_another_takes_over(segment: Segment,
                                                               client: ApiClient) -> None:
    for name in NODE_IPS:
        await client.create(NODES, "", {"apiVersion": "v1", "kind": "Node",
                                        "metadata": {"name": name}})
        await set_ready(client, name, True)
    await client.create(SERVICES, "default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80,
                                                    "targetPort": 8080}]}})
    elected = elect(LB_IP, NODE_IPS)
    assert elected is not None
    other = next(n for n in NODE_IPS if n != elected)
    announcers = {n: Announcer(client, n, ip, host_netns=segment.netns[n], debounce=0.05,
                               resync=3600) for n, ip in NODE_IPS.items()}
    appliers = {n: IptablesApplier(host_netns=segment.netns[n]) for n in NODE_IPS}

    async def holders() -> dict[str, set[str]]:
        return {n: await a.addresses() for n, a in announcers.items()}

    try:
        async with running(ServiceLBController(client, pool=IPPool(f"{LB_IP}/32")).run(),
                           *(a.run() for a in announcers.values())):
            async def with_ip() -> Obj | None:
                svc = await client.get(SERVICES, "default", "web")
                return svc if announced_ips(svc) == (LB_IP,) else None

            svc = await eventually(with_ip, what="the Service's IP")
            endpoints = {"metadata": {"namespace": "default", "name": "web"},
                         "subsets": [{"addresses": [{"ip": BACKEND_IP}],
                                      "ports": [{"name": "http", "port": 8080}]}]}
            for n, applier in appliers.items():
                await applier.apply(build([svc], [endpoints], cluster_cidr="10.244.0.0/16",
                                          node_ips=[NODE_IPS[n]]))

            async def held_by(holder: str) -> bool:
                return await holders() == {holder: {LB_IP}, next(
                    n for n in NODE_IPS if n != holder): set()}

            await eventually(lambda: held_by(elected), what=f"{elected} holds {LB_IP}")
            # From outside the nodes, DNATed to the backend through the elected node.
            assert await segment.connect() == NODE_IPS[elected]
            assert segment.client_neighbour() == segment.mac(elected)

            await set_ready(client, elected, False)
            await eventually(lambda: held_by(other), what=f"{other} takes {LB_IP} over")
            # The gratuitous ARP moved the client's entry at once (no probe has run yet).
            wanted = segment.mac(other)

            async def moved() -> bool:
                return segment.client_neighbour() == wanted

            await eventually(moved, timeout=2, what="the client's ARP entry moves")
            assert await segment.connect() == NODE_IPS[other]
        # Stopped announcers leave no IP behind.
        assert not segment.has_device(elected) and not segment.has_device(other)
    finally:
        for applier in appliers.values():
            await applier.teardown()
