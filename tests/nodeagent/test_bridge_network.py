"""BridgeNetwork for real (privileged): a "host" network namespace and "pod" namespaces that
this test creates, the bridge and NAT set up inside the host namespace, Pods attached, pinging
each other and their gateway; idempotent setup and attach, the IPAM state surviving a new
BridgeNetwork (an agent restart), detach also after the namespace died, and a failed attach
leaving no veth and no allocation.

Every namespace has a unique name and is deleted in the fixture's ``finally``; the bridge and
the iptables rules live inside the test's host namespace and go with it. No packet is sent to
an address outside the namespaces created here. ``ping`` is a raw-socket ICMP echo in Python,
so the test does not need iputils."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeagent.network import BridgeNetwork, PodNetworkError
from nodeagent.network.bridge import NAT_CHAIN, veth_name

pytestmark = pytest.mark.privileged

POD_CIDR = "10.244.1.0/24"
GATEWAY = "10.244.1.1"

PING = r"""
import os, socket, struct, sys, time
def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
dst = sys.argv[1]
ident = os.getpid() & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
payload = b"corral-test"
s.sendto(struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, 1) + payload, (dst, 0))
deadline = time.monotonic() + float(sys.argv[2])
while (left := deadline - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        data, (src, _) = s.recvfrom(2048)
    except socket.timeout:
        break
    ihl = (data[0] & 0x0F) * 4
    kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    if kind == 0 and rid == ident and src == dst:
        sys.exit(0)
sys.exit(1)
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def ping(netns: str, address: str, attempts: int = 3) -> bool:
    """One ICMP echo from inside ``netns`` to ``address`` (retried: the first may wait on ARP)."""
    for _ in range(attempts):
        if sh("ip", "netns", "exec", netns, sys.executable, "-c", PING, address, "1",
              check=False).returncode == 0:
            return True
    return False


def eth0_addresses(netns: str) -> list[str]:
    out = sh("ip", "-n", netns, "-o", "-4", "addr", "show", "dev", "eth0").stdout
    return [line.split()[3] for line in out.splitlines()]


def host_links(host: str) -> list[str]:
    out = sh("ip", "-n", host, "-o", "link", "show").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


@dataclass
class Lab:
    host: str
    pods: list[str]
    state_dir: Path
    make_netns: Callable[[str], str]

    def path(self, pod: str) -> str:
        return f"/var/run/netns/{pod}"

    def network(self, **kwargs: object) -> BridgeNetwork:
        return BridgeNetwork(POD_CIDR, self.state_dir, host_netns=self.host,
                             cluster_cidr="10.244.0.0/16", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def lab(require: Callable[[str], None], tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nsenter", "iptables")):
        require("root and ip netns")
    tag = uuid.uuid4().hex[:8]
    created: list[str] = []

    def make_netns(role: str) -> str:
        name = f"ct-{role}-{tag}"
        sh("ip", "netns", "add", name)
        created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    try:
        host = make_netns("h")
        pods = [make_netns(f"p{i}") for i in (1, 2)]
        yield Lab(host, pods, tmp_path / "network", make_netns)
    finally:
        for name in reversed(created):
            sh("ip", "netns", "delete", name, check=False)


async def test_pods_reach_each_other_and_the_gateway(lab: Lab) -> None:
    net = lab.network(mtu=1400)
    await net.setup()
    await net.setup()  # idempotent
    ips = [await net.attach(f"sandbox-{i}", lab.path(pod)) for i, pod in enumerate(lab.pods)]
    assert ips == ["10.244.1.2", "10.244.1.3"]
    for pod, ip in zip(lab.pods, ips, strict=True):
        assert eth0_addresses(pod) == [f"{ip}/24"]
        route = sh("ip", "-n", pod, "route", "show", "default").stdout
        assert f"default via {GATEWAY} dev eth0" in route
        assert "mtu 1400" in sh("ip", "-n", pod, "link", "show", "dev", "eth0").stdout
        lo_flags = sh("ip", "-n", pod, "link", "show", "dev", "lo").stdout.split("<")[1]
        assert ",UP" in lo_flags.split(">")[0]
    ports = sh("ip", "-n", lab.host, "-o", "link", "show", "master", "corral0").stdout
    assert veth_name("sandbox-0") in ports and veth_name("sandbox-1") in ports
    details = sh("ip", "-n", lab.host, "-d", "link", "show", "dev", veth_name("sandbox-0"))
    assert "hairpin on" in details.stdout  # a pod may reach itself through a Service
    assert ping(lab.pods[0], ips[1])
    assert ping(lab.pods[1], ips[0])
    assert ping(lab.pods[0], GATEWAY)
    assert ping(lab.pods[1], GATEWAY)
    # And the host namespace routes to the Pods.
    assert ping(lab.host, ips[0])


async def test_setup_is_idempotent_and_teardown_removes_everything(lab: Lab) -> None:
    net = lab.network()
    for _ in range(2):
        await net.setup()
    addr = sh("ip", "-n", lab.host, "-o", "-4", "addr", "show", "dev", "corral0").stdout
    assert [line.split()[3] for line in addr.splitlines()] == [f"{GATEWAY}/24"]
    forward = sh("ip", "netns", "exec", lab.host, "sysctl", "-n", "net.ipv4.ip_forward")
    assert forward.stdout.strip() == "1"
    rules = sh("ip", "netns", "exec", lab.host, "iptables", "-t", "nat", "-S").stdout
    assert rules.count(f"-A POSTROUTING -j {NAT_CHAIN}") == 1
    assert rules.count(
        f"-A {NAT_CHAIN} -s {POD_CIDR} ! -d 10.244.0.0/16 -j MASQUERADE") == 1

    # A new object (agent restart) over a bridge that exists already.
    await lab.network().setup()
    rules_again = sh("ip", "netns", "exec", lab.host, "iptables", "-t", "nat", "-S").stdout
    assert rules_again == rules

    await net.teardown()
    await net.teardown()
    assert "corral0" not in host_links(lab.host)
    rules = sh("ip", "netns", "exec", lab.host, "iptables", "-t", "nat", "-S").stdout
    assert NAT_CHAIN not in rules


async def test_changed_pod_cidr_replaces_the_gateway_address(lab: Lab) -> None:
    await lab.network().setup()
    other = BridgeNetwork("10.244.9.0/24", lab.state_dir, host_netns=lab.host, masquerade=False)
    await other.setup()
    addr = sh("ip", "-n", lab.host, "-o", "-4", "addr", "show", "dev", "corral0").stdout
    assert [line.split()[3] for line in addr.splitlines()] == ["10.244.9.1/24"]


async def test_attach_is_idempotent_and_survives_restart(lab: Lab) -> None:
    net = lab.network()
    pod = lab.path(lab.pods[0])
    ip = await net.attach("sandbox-a", pod)
    assert await net.attach("sandbox-a", pod) == ip
    assert eth0_addresses(lab.pods[0]) == [f"{ip}/24"]
    assert host_links(lab.host).count(veth_name("sandbox-a")) == 1

    restarted = lab.network()
    assert restarted.ip_of("sandbox-a") == ip
    assert await restarted.attach("sandbox-a", pod) == ip
    assert restarted.ip_of("nobody") is None
    assert await restarted.attach("sandbox-b", lab.path(lab.pods[1])) == "10.244.1.3"
    assert ping(lab.pods[1], ip)


async def test_detach_removes_the_veth_and_frees_the_ip(lab: Lab) -> None:
    net = lab.network()
    ip = await net.attach("sandbox-a", lab.path(lab.pods[0]))
    await net.detach("sandbox-a", lab.path(lab.pods[0]))
    assert veth_name("sandbox-a") not in host_links(lab.host)
    assert "eth0" not in sh("ip", "-n", lab.pods[0], "-o", "link").stdout
    assert net.ip_of("sandbox-a") is None
    assert net.ipam.allocations() == {}
    await net.detach("sandbox-a", lab.path(lab.pods[0]))  # idempotent
    await net.detach("never-attached", None)
    # Round-robin: the freed address is not the next one handed out.
    assert await net.attach("sandbox-b", lab.path(lab.pods[1])) != ip


async def test_detach_after_the_netns_is_gone(lab: Lab) -> None:
    net = lab.network()
    doomed = lab.make_netns("p3")
    path = lab.path(doomed)
    await net.attach("sandbox-dead", path)
    sh("ip", "netns", "delete", doomed)
    await net.detach("sandbox-dead", path)
    assert veth_name("sandbox-dead") not in host_links(lab.host)
    assert net.ip_of("sandbox-dead") is None
    await net.detach("sandbox-dead", None)


async def test_attach_to_a_missing_netns_leaves_nothing(lab: Lab) -> None:
    net = lab.network()
    with pytest.raises(PodNetworkError, match="does not exist"):
        await net.attach("sandbox-x", "/proc/999999999/ns/net")
    assert veth_name("sandbox-x") not in host_links(lab.host)
    assert net.ip_of("sandbox-x") is None
    assert net.ipam.allocations() == {}


async def test_failure_mid_attach_rolls_back(lab: Lab) -> None:
    net = lab.network()
    await net.setup()
    # The bridge vanishes under the agent: the veth is created, joining the bridge fails.
    sh("ip", "-n", lab.host, "link", "del", "corral0")
    with pytest.raises(PodNetworkError, match="corral0") as failure:
        await net.attach("sandbox-y", lab.path(lab.pods[0]))
    assert "\n" not in str(failure.value)
    assert veth_name("sandbox-y") not in host_links(lab.host)
    assert "eth0" not in sh("ip", "-n", lab.pods[0], "-o", "link").stdout
    assert net.ip_of("sandbox-y") is None
    assert net.ipam.allocations() == {}
    # A later setup repairs it and the same sandbox attaches cleanly.
    await net.setup()
    assert await net.attach("sandbox-y", lab.path(lab.pods[0])) == "10.244.1.3"


async def test_a_path_that_is_not_a_netns_fails_cleanly(lab: Lab, tmp_path: Path) -> None:
    net = lab.network()
    bogus = tmp_path / "not-a-netns"
    bogus.write_text("")
    with pytest.raises(PodNetworkError):
        await net.attach("sandbox-z", str(bogus))
    assert veth_name("sandbox-z") not in host_links(lab.host)
    assert net.ipam.allocations() == {}
