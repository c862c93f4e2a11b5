"""The Service proxy's applier: first what it runs, through a recording command runner (full
writes, partial writes of only the changed chains, nothing for no change, a full write again
after a failure or with ``force``); then for real (privileged): a "node" network namespace with
a bridge to two backend namespaces, each running a tiny TCP server on :8080 that answers with
its name; the rules for the ClusterIP Service 10.96.10.10:80 (and 10.96.10.11:80) applied
inside the node namespace, and clients in the node namespace (the OUTPUT path) or a backend
(PREROUTING) connecting to it.

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

from nodeagent.network.base import PodNetworkError
from nodeagent.network.command import Result
from nodeagent.proxy import IptablesApplier, build
from nodeagent.proxy.iptables import chain_rules, partial_input
from nodeagent.proxy.rules import (
    JUMPS,
    SEP_PREFIX,
    SERVICES_CHAIN,
    SVC_PREFIX,
    sep_chain,
    svc_chain,
)

CLUSTER_IP = "10.96.10.10"
OTHER_IP = "10.96.10.11"
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

    def connect(self, count: int, *, source: str | None = None,
                cluster_ip: str = CLUSTER_IP) -> list[str]:
        """``count`` connections to the Service from the node (or from the backend
        namespace ``source``, through PREROUTING); each one's answer or error."""
        out = sh("ip", "netns", "exec", source or self.netns, sys.executable, "-c", CLIENT,
                 cluster_ip, "80", str(count)).stdout
        return json.loads(out)

    def save(self, *options: str) -> str:
        return sh("ip", "netns", "exec", self.netns, "iptables-save", *options).stdout


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


def service(name: str = "web", cluster_ip: str = CLUSTER_IP, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80}],
                     **spec}}


def endpoints(*names: str, service_name: str = "web") -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": service_name},
            "subsets": [{"addresses": [{"ip": BACKENDS[n]} for n in names],
                         "ports": [{"name": "http", "port": 8080}]}] if names else []}


def rules(*names: str, **spec: Any) -> Any:
    return build([service(**spec)], [endpoints(*names)], cluster_cidr="10.244.0.0/16")


def two_services(web: tuple[str, ...], api: tuple[str, ...]) -> Any:
    """``web`` (10.96.10.10) and ``api`` (10.96.10.11) with these backends."""
    return build([service(), service("api", OTHER_IP)],
                 [endpoints(*web), endpoints(*api, service_name="api")],
                 cluster_cidr="10.244.0.0/16")


WEB_SVC, API_SVC = svc_chain("default/web:http", "TCP"), svc_chain("default/api:http", "TCP")
WEB_SEP1 = sep_chain("default/web:http", "TCP", "10.244.1.2:8080")
WEB_SEP2 = sep_chain("default/web:http", "TCP", "10.244.1.3:8080")
API_SEP1 = sep_chain("default/api:http", "TCP", "10.244.1.2:8080")


# -- what the applier runs: a recording runner ------------------------------------------------

class Recorder:
    """A command runner that records each command and its input, answers ``iptables-save``
    with ``saved`` and can fail ``iptables-restore``."""

    def __init__(self) -> None:
        self.commands: list[tuple[tuple[str, ...], str | None]] = []
        self.saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:CORRAL-SEP-LEFTOVER - [0:0]\nCOMMIT\n"
        self.fail_restore = False

    async def __call__(self, *argv: str, check: bool = True,
                       stdin: str | None = None) -> Result:
        self.commands.append((argv, stdin))
        if argv[0] == "iptables-restore" and self.fail_restore:
            raise PodNetworkError("iptables-restore: line 3 failed")
        return Result(0, self.saved if argv[0] == "iptables-save" else "", "")

    def take(self) -> list[tuple[tuple[str, ...], str | None]]:
        taken, self.commands = self.commands, []
        return taken

    @staticmethod
    def programs(commands: list[tuple[tuple[str, ...], str | None]]) -> list[str]:
        return [argv[0] for argv, _ in commands]

    @staticmethod
    def restored(commands: list[tuple[tuple[str, ...], str | None]]) -> list[str]:
        return [text for argv, text in commands if argv[0] == "iptables-restore" and text]


def declared(text: str) -> list[str]:
    return [line[1:].split()[0] for line in text.splitlines() if line.startswith(":")]


async def test_a_partial_apply_writes_only_the_chains_that_changed() -> None:
    recorder = Recorder()
    applier = IptablesApplier(runner=recorder)

    # The first apply is full: both tables read, written whole, the leftover deleted, jumps.
    assert await applier.apply(two_services(("b1", "b2"), ("b1",)))
    first = recorder.take()
    assert recorder.programs(first).count("iptables-save") == 2
    assert recorder.programs(first).count("iptables") == len(JUMPS)  # the jumps checked
    nat, filt = recorder.restored(first)
    assert {WEB_SVC, API_SVC, WEB_SEP1, WEB_SEP2, API_SEP1, SERVICES_CHAIN} <= set(declared(nat))
    assert "-X CORRAL-SEP-LEFTOVER" in nat
    assert filt.startswith("*filter\n")

    # web loses b1: its service chain is refilled, b1's endpoint chain deleted; nothing of api
    # nor CORRAL-SERVICES (web still has an endpoint), the filter table not written, no save.
    assert await applier.apply(two_services(("b2",), ("b1",)))
    second = recorder.take()
    assert recorder.programs(second) == ["iptables-restore"]
    [text] = recorder.restored(second)
    assert declared(text) == [WEB_SVC, WEB_SEP1]
    assert f"-X {WEB_SEP1}" in text and API_SVC not in text and API_SEP1 not in text
    assert {line.split()[1] for line in text.splitlines() if line.startswith("-A")} == {WEB_SVC}

    # api loses its only endpoint: CORRAL-SERVICES loses its jump, api's chains go, and the
    # filter table gets the REJECT.
    assert await applier.apply(two_services(("b2",), ()))
    nat, filt = recorder.restored(recorder.take())
    assert declared(nat) == [SERVICES_CHAIN, API_SEP1, API_SVC]
    assert f"-X {API_SVC}" in nat
    assert "default/api:http has no endpoints" in filt

    # Nothing changed: nothing run.
    assert not await applier.apply(two_services(("b2",), ()))
    assert recorder.take() == []

    # A failed write: the next apply is full again, though the rules are the same.
    recorder.fail_restore = True
    with pytest.raises(PodNetworkError):
        await applier.apply(two_services(("b1", "b2"), ()))
    recorder.fail_restore = False
    recorder.take()
    assert await applier.apply(two_services(("b1", "b2"), ()))
    assert recorder.programs(recorder.take()).count("iptables-save") == 2

    # force (the resync) writes everything, with no change at all.
    assert await applier.apply(two_services(("b1", "b2"), ()), force=True)
    forced = recorder.take()
    assert recorder.programs(forced).count("iptables-save") == 2
    assert {WEB_SVC, WEB_SEP1, WEB_SEP2} <= set(declared(recorder.restored(forced)[0]))


def test_partial_input_and_chain_rules() -> None:
    old = chain_rules(two_services(("b1",), ("b1",)).nat)
    new = chain_rules(two_services(("b1",), ("b1",)).nat)
    assert partial_input("nat", old, new) is None
    assert old[API_SVC][-1].endswith(f"-j {API_SEP1}")
    assert [r.split()[1] for r in old[API_SEP1]] == [API_SEP1, API_SEP1]
    grown = chain_rules(two_services(("b1", "b2"), ("b1",)).nat)
    text = partial_input("nat", old, grown)
    assert text is not None and declared(text) == [WEB_SVC, WEB_SEP2]
    assert partial_input("nat", grown, old) == (
        f"*nat\n:{WEB_SVC} - [0:0]\n:{WEB_SEP2} - [0:0]\n" + "\n".join(old[WEB_SVC])
        + f"\n-X {WEB_SEP2}\nCOMMIT\n")
    with pytest.raises(ValueError, match="not declared"):
        chain_rules(type(two_services((), ()).nat)(["A"], ["-A B -j ACCEPT"]))


# -- for real, in network namespaces -----------------------------------------------------------


@pytest.mark.privileged
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


@pytest.mark.privileged
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


@pytest.mark.privileged
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


@pytest.mark.privileged
async def test_one_services_change_leaves_the_others_rules_and_counters(node: Node) -> None:
    applier = IptablesApplier(host_netns=node.netns)

    def counted(chains: set[str]) -> list[str]:
        """Our rules in those chains with their packet counters (``iptables-save -c``)."""
        return [line for line in node.save("-c", "-t", "nat").splitlines()
                if "-A " in line and line.split("-A ", 1)[1].split()[0] in chains]

    try:
        await applier.apply(two_services(("b1", "b2"), ("b1",)))
        assert set(node.connect(10, cluster_ip=OTHER_IP)) == {"b1"}
        api_before = counted({API_SVC, API_SEP1, SERVICES_CHAIN})
        assert any(not line.startswith("[0:0]") for line in api_before), api_before

        assert await applier.apply(two_services(("b2",), ("b1",)))
        assert counted({API_SVC, API_SEP1, SERVICES_CHAIN}) == api_before  # not rewritten
        assert WEB_SEP1 not in await applier.chains("nat")
        assert set(node.connect(10)) == {"b2"}
        assert set(node.connect(10, cluster_ip=OTHER_IP)) == {"b1"}
    finally:
        await applier.teardown()
