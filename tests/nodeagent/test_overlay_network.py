"""OverlayNetwork: the wanted peers from Node objects, the diff applied through UAPI (against
``overlay.uapi.MemoryDevice`` behind a ``UapiServer`` in a temporary socket directory), the
private key on disk; and, as root, two namespaces joined by real ``corral wg`` interfaces, a
restarted agent reusing the device, ``stop`` deleting it."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.client import NODES, ApiClient
from controlplane.localcluster import InProcessCluster
from nodeagent.agent import Agent, AgentConfig
from nodeagent.network.overlay import (
    ANNOTATION_ENDPOINT,
    ANNOTATION_PUBLIC_KEY,
    KEEPALIVE_SECONDS,
    KEY_FILE,
    OverlayError,
    OverlayNetwork,
    WantedPeer,
    load_or_create_key,
    peer_changes,
    uapi_get,
    wanted_peers,
)
from nodeagent.runtime.fake import FakeRuntime
from overlay.crypto import generate_private_key, key_to_base64, public_key
from overlay.uapi import (
    DeviceStatus,
    DeviceUpdate,
    Endpoint,
    MemoryDevice,
    PeerStatus,
    UapiServer,
)
from tests.controllers.ctlharness import eventually, running

ROOT = Path(__file__).resolve().parents[2]


def keypair() -> tuple[bytes, str]:
    private = generate_private_key()
    return public_key(private), key_to_base64(public_key(private))


def node(name: str, key: str | None, endpoint: str | None, cidr: str | None) -> dict[str, Any]:
    annotations = {}
    if key is not None:
        annotations[ANNOTATION_PUBLIC_KEY] = key
    if endpoint is not None:
        annotations[ANNOTATION_ENDPOINT] = endpoint
    return {"metadata": {"name": name, "annotations": annotations},
            "spec": {"podCIDR": cidr} if cidr else {}}


def net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


# -- pure ----------------------------------------------------------------------------------------

def test_wanted_peers_skips_self_incomplete_and_malformed_nodes() -> None:
    (k1, b1), (_, b2), (_, b3), (own, own_b64) = keypair(), keypair(), keypair(), keypair()
    nodes = [
        node("me", own_b64, "198.18.1.10:51820", "10.244.0.0/24"),
        node("a", b1, "198.18.1.11:51820", "10.244.1.0/24"),
        node("b", b2, "198.18.1.12:51820", None),            # no podCIDR yet
        node("c", None, "198.18.1.13:51820", "10.244.3.0/24"),  # not on the overlay
        node("d", "not-a-key", "198.18.1.14:51820", "10.244.4.0/24"),
        node("e", b3, "nowhere", "10.244.5.0/24"),
        node("f", b3, "198.18.1.16:51820", "10.244.1.0/24"),  # a's podCIDR: a sorts first
        node("g", own_b64, "198.18.1.17:51820", "10.244.7.0/24"),  # our key under another name
    ]
    assert wanted_peers(nodes, "me", own) == {
        k1: WantedPeer("a", net("10.244.1.0/24"), Endpoint.parse("198.18.1.11:51820"))}


def test_peer_changes_sets_new_and_changed_removes_gone_leaves_unchanged() -> None:
    (k1, _), (k2, _), (k3, _), (k4, _) = keypair(), keypair(), keypair(), keypair()
    e = Endpoint.parse
    current = DeviceStatus(peers=[
        PeerStatus(k1, endpoint=e("198.18.1.11:51820"), allowed_ips=[net("10.244.1.0/24")],
                   persistent_keepalive_interval=KEEPALIVE_SECONDS),
        PeerStatus(k2, endpoint=e("198.18.1.12:51820"), allowed_ips=[net("10.244.2.0/24")],
                   persistent_keepalive_interval=KEEPALIVE_SECONDS),
        PeerStatus(k3, endpoint=e("198.18.1.13:51820"), allowed_ips=[net("10.244.3.0/24")]),
    ])
    wanted = {
        k1: WantedPeer("a", net("10.244.1.0/24"), e("198.18.1.11:51820")),   # unchanged
        k2: WantedPeer("b", net("10.244.9.0/24"), e("198.18.1.12:51820")),   # new podCIDR
        k4: WantedPeer("d", net("10.244.4.0/24"), e("198.18.1.14:51820")),   # new node
    }
    changes = peer_changes(current, wanted)
    assert [(c.public_key, c.remove) for c in changes] == [(k2, False), (k4, False), (k3, True)]
    set_b = changes[0]
    assert set_b.replace_allowed_ips and set_b.allowed_ips == [net("10.244.9.0/24")]
    assert set_b.endpoint == e("198.18.1.12:51820")
    assert set_b.persistent_keepalive_interval == KEEPALIVE_SECONDS
    assert peer_changes(DeviceStatus(peers=current.peers[:1]), {k1: wanted[k1]}) == []


def test_private_key_is_made_once_0600_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "net" / KEY_FILE
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temporary left
    path.write_text("garbage\n")
    with pytest.raises(OverlayError, match="holds no WireGuard private key"):
        load_or_create_key(path)


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    for kwargs in ({"ifname": "x" * 16}, {"listen_port": 0}, {"underlay_mtu": 1000},
                   {"cluster_cidr": "10.244.0.1/16"}):
        with pytest.raises(OverlayError):
            OverlayNetwork("me", "198.18.1.10", tmp_path, **kwargs)
    with pytest.raises(OverlayError):
        OverlayNetwork("me", "not-an-ip", tmp_path)


# -- through UAPI, against MemoryDevice ----------------------------------------------------------

class RecordingDevice(MemoryDevice):
    def __init__(self) -> None:
        super().__init__()
        self.updates: list[DeviceUpdate] = []

    def apply(self, update: DeviceUpdate) -> None:
        self.updates.append(update)
        super().apply(update)


@pytest.fixture
async def device(tmp_path: Path) -> AsyncIterator[tuple[RecordingDevice, Path]]:
    socket_dir = Path("/tmp") / f"crl-uapi-{uuid.uuid4().hex[:8]}"  # short: sun_path is 108
    dev = RecordingDevice()
    async with UapiServer("ovl0", dev, socket_dir=socket_dir):
        yield dev, socket_dir
    shutil.rmtree(socket_dir, ignore_errors=True)


async def test_sync_peers_applies_only_the_difference(
        device: tuple[RecordingDevice, Path], tmp_path: Path) -> None:
    dev, socket_dir = device
    ovl = OverlayNetwork("me", "198.18.1.10", tmp_path, ifname="ovl0", socket_dir=socket_dir)
    assert ovl.endpoint == "198.18.1.10:51820"
    assert ovl.annotations() == {ANNOTATION_PUBLIC_KEY: ovl.public_key,
                                 ANNOTATION_ENDPOINT: "198.18.1.10:51820"}
    (k1, b1), (k2, b2), (k3, b3) = keypair(), keypair(), keypair()
    me = node("me", ovl.public_key, ovl.endpoint, "10.244.0.0/24")
    a = node("a", b1, "198.18.1.11:51820", "10.244.1.0/24")
    b = node("b", b2, "198.18.1.12:51820", "10.244.2.0/24")

    changes = await ovl.sync_peers([me, a, b])
    assert {c.public_key for c in changes} == {k1, k2}
    status = dev.status()
    assert {p.public_key: (p.allowed_ips, str(p.endpoint), p.persistent_keepalive_interval)
            for p in status.peers} == {
        k1: ([net("10.244.1.0/24")], "198.18.1.11:51820", KEEPALIVE_SECONDS),
        k2: ([net("10.244.2.0/24")], "198.18.1.12:51820", KEEPALIVE_SECONDS)}

    dev.updates.clear()
    assert await ovl.sync_peers([me, a, b]) == []
    assert dev.updates == []  # nothing to do: no request at all

    # b moves, c joins, a leaves: one request with exactly these three sections.
    b_moved = node("b", b2, "198.18.1.22:51820", "10.244.2.0/24")
    c = node("c", b3, "198.18.1.13:51820", "10.244.3.0/24")
    await ovl.sync_peers([me, b_moved, c])
    [update] = dev.updates
    assert [(p.public_key, p.remove) for p in update.peers] == [(k2, False), (k3, False),
                                                                 (k1, True)]
    assert update.private_key is None and update.listen_port is None
    status = dev.status()
    assert {p.public_key: str(p.endpoint) for p in status.peers} == {
        k2: "198.18.1.22:51820", k3: "198.18.1.13:51820"}

    # A change to one peer leaves the other's section out of the request.
    dev.updates.clear()
    c_cidr = node("c", b3, "198.18.1.13:51820", "10.244.33.0/24")
    await ovl.sync_peers([me, b_moved, c_cidr])
    [update] = dev.updates
    assert [p.public_key for p in update.peers] == [k3]
    assert [p.allowed_ips for p in dev.status().peers if p.public_key == k3] == \
        [[net("10.244.33.0/24")]]


async def test_a_live_socket_of_another_namespace_is_refused(
        device: tuple[RecordingDevice, Path], tmp_path: Path,
        require: Callable[[str], None]) -> None:
    """The socket answers but no link ``ovl0`` exists here: it is another namespace's."""
    if shutil.which("ip") is None:
        require("iproute2")
    _, socket_dir = device
    ovl = OverlayNetwork("me", "198.18.1.10", tmp_path, ifname="ovl0", socket_dir=socket_dir)
    with pytest.raises(OverlayError, match="another network namespace"):
        await ovl.start("10.244.0.0/24")


async def test_sync_without_a_device_is_an_overlay_error(tmp_path: Path) -> None:
    ovl = OverlayNetwork("me", "198.18.1.10", tmp_path, ifname="ovl0",
                         socket_dir=tmp_path / "none")
    with pytest.raises(OverlayError, match="ovl0"):
        await ovl.sync_peers([])


# -- real interfaces, as root ----------------------------------------------------------------------

def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)


@pytest.fixture
def two_hosts(require: Callable[[str], None]) -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a veth (198.19.77.1 and .2), each with a port-less bridge "corral0"
    holding its podCIDR's gateway; a unique tag for interface names."""
    if os.geteuid() != 0:
        require("root")
    if shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        require("iproute2 and /dev/net/tun")
    tag = uuid.uuid4().hex[:6]
    a, b = f"ovla{tag}", f"ovlb{tag}"
    try:
        for ns in (a, b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", b)
        for ns, i in ((a, 1), (b, 2)):
            sh("ip", "-n", ns, "addr", "add", f"198.19.77.{i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "add", "corral0", "type", "bridge")
            sh("ip", "-n", ns, "addr", "add", f"10.244.{i}.1/24", "dev", "corral0")
            sh("ip", "-n", ns, "link", "set", "corral0", "up")
        yield a, b, tag
    finally:
        for ns in (a, b):
            # Every process of the namespace (the detached corral wg), then the namespace.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], check=False)


def wg_pids(ns: str, ifname: str) -> list[int]:
    found = []
    for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              check=False).stdout.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"overlay.main" in cmdline and ifname.encode() in cmdline:
            found.append(int(pid))
    return found


SERVE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(); print("ready", flush=True)
c, peer = s.accept(); c.sendall(("hello " + peer[0]).encode()); c.close()
"""
FETCH = """
import socket, sys
c = socket.create_connection((sys.argv[1], 8080), timeout=10)
print(c.recv(100).decode(), end="")
"""


@pytest.mark.privileged
async def test_two_namespaces_talk_through_corral_wg_and_a_restart_reuses_it(
        two_hosts: tuple[str, str, str], tmp_path: Path) -> None:
    a, b, tag = two_hosts
    env_ifname = {a: f"ovwa{tag}", b: f"ovwb{tag}"}
    cidr = {a: "10.244.1.0/24", b: "10.244.2.0/24"}
    ip = {a: "198.19.77.1", b: "198.19.77.2"}

    def make(ns: str) -> OverlayNetwork:
        return OverlayNetwork(ns, ip[ns], tmp_path / ns, ifname=env_ifname[ns], host_netns=ns,
                              wg_command=[sys.executable, "-m", "overlay.main"],
                              underlay_mtu=1500)

    ovl = {ns: make(ns) for ns in (a, b)}
    for ns in (a, b):
        assert await ovl[ns].start(cidr[ns]) is True
    nodes = [{"metadata": {"name": ns, "annotations": ovl[ns].annotations()},
              "spec": {"podCIDR": cidr[ns]}} for ns in (a, b)]
    for ns in (a, b):
        [change] = await ovl[ns].sync_peers(nodes)
        assert change.allowed_ips == [net(cidr[b if ns == a else a])]

    link = sh("ip", "-n", a, "-o", "link", "show", "dev", env_ifname[a]).stdout
    assert "mtu 1420" in link and ",UP" in link
    route = sh("ip", "-n", a, "route", "show", "10.244.0.0/16").stdout
    assert f"dev {env_ifname[a]}" in route and "src 10.244.1.1" in route and "mtu 1420" in route
    # The interface holds the gateway address: what MASQUERADE picks for proxied traffic.
    held = sh("ip", "-n", a, "-o", "-4", "address", "show", "dev", env_ifname[a]).stdout
    assert "inet 10.244.1.1/32" in held, held
    status = await uapi_get(ovl[a].socket_path)
    assert status.listen_port == 51820 and len(status.peers) == 1

    # A "pod address" of b answers a's node through the tunnel; b sees a's podCIDR source.
    serve = ["ip", "netns", "exec", b, sys.executable, "-c", SERVE, "10.244.2.1"]
    server = subprocess.Popen(serve, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        got = await asyncio.to_thread(
            sh, "ip", "netns", "exec", a, sys.executable, "-c", FETCH, "10.244.2.1")
        assert got.stdout == "hello 10.244.1.1"
    finally:
        server.kill()
        server.wait()
    status = await uapi_get(ovl[a].socket_path)
    assert status.peers[0].last_handshake_ns > 0 and status.peers[0].rx_bytes > 0

    # A restarted agent: a new OverlayNetwork finds the live device and reuses it.
    [pid] = wg_pids(a, env_ifname[a])
    again = make(a)
    assert again.public_key == ovl[a].public_key  # the key from disk
    assert await again.start(cidr[a]) is False
    assert wg_pids(a, env_ifname[a]) == [pid]
    assert await again.sync_peers(nodes) == []
    assert (await uapi_get(again.socket_path)).peers[0].last_handshake_ns == \
        status.peers[0].last_handshake_ns  # the session was not disturbed

    # stop: the interface and its process and socket go.
    await again.stop()
    gone = await asyncio.to_thread(subprocess.run, ["ip", "-n", a, "link", "show", "dev",
                                                    env_ifname[a]], capture_output=True)
    assert gone.returncode != 0
    for _ in range(50):
        if not wg_pids(a, env_ifname[a]):
            break
        await asyncio.sleep(0.1)
    assert not wg_pids(a, env_ifname[a])
    assert not again.socket_path.exists()
    await again.stop()  # idempotent
    await ovl[b].stop()


# -- the agent's overlay loop ----------------------------------------------------------------------

class FakeOverlay:
    """Records what the agent asks of its overlay; the first start fails (and is retried)."""

    def __init__(self) -> None:
        self.starts: list[str | None] = []
        self.synced: list[list[str]] = []

    async def start(self, pod_cidr: str | None = None) -> bool:
        self.starts.append(pod_cidr)
        if len(self.starts) == 1:
            raise OverlayError("no /dev/net/tun (injected)")
        return True

    def annotations(self) -> dict[str, str]:
        return {ANNOTATION_PUBLIC_KEY: "K" * 43 + "=", ANNOTATION_ENDPOINT: "198.18.0.7:51820"}

    async def sync_peers(self, nodes: list[dict[str, Any]]) -> list[Any]:
        self.synced.append(sorted(n["metadata"]["name"] for n in nodes))
        return []


async def test_agent_publishes_the_overlay_and_syncs_peers_as_nodes_change(
        cluster: InProcessCluster, client: ApiClient, tmp_path: Path) -> None:
    """The agent starts its overlay (retrying), publishes key and endpoint on its own Node
    with the node's credential, and syncs peers from a Node informer."""
    overlay = FakeOverlay()
    config = AgentConfig(node_name="node-a", data_dir=tmp_path / "agent", node_ip="198.18.0.7",
                         capacity={"cpu": "4", "memory": "8Gi", "pods": "110"})

    async def factory(node: dict[str, Any]) -> FakeRuntime:
        return FakeRuntime(time.time)

    async def now(value: Any) -> Any:
        return value

    async with cluster.node_client("node-a", [cluster.url]) as node_client:
        agent = Agent(node_client, config, factory, overlay=overlay)
        async with running(agent.run()):
            await asyncio.wait_for(agent.ready.wait(), 10)

            async def annotated() -> bool:
                meta = (await client.get(NODES, "", "node-a"))["metadata"]
                return (meta.get("annotations") or {}) == overlay.annotations()

            await eventually(annotated)
            assert overlay.starts == [None, None]  # no podCIDR here; the failed start retried
            await eventually(lambda: now(overlay.synced and overlay.synced[-1] == ["node-a"]))
            await client.create(NODES, "", {"apiVersion": "v1", "kind": "Node",
                                            "metadata": {"name": "node-b"}, "spec": {}})
            await eventually(lambda: now(overlay.synced[-1] == ["node-a", "node-b"]))
            await client.delete(NODES, "", "node-b")
            await eventually(lambda: now(overlay.synced[-1] == ["node-a"]))
