"""Corral's overlay against wireguard-go: handshakes both ways, data, ``wg show`` on both sides.

Namespace A runs Corral and namespace B runs ``wireguard-go -f``; a veth pair on 198.18.42.0/24
(and fd00:42::/64) joins them and carries the encrypted UDP. Each test starts a fresh pair, so
the side that sends first is also the side that initiates the handshake.

- The first tests run ``python -m overlay.main -f`` in A: ping and iperf3 through the tunnel in
  both directions, with each side the initiator once, over an IPv4 or an IPv6 underlay and with
  IPv4 and IPv6 inside the tunnel (a UDP echo: there is no ping6 here).
- The last test runs Corral's ``Device`` in this process, on a thread that entered A, with a
  real TUN interface and a clock the test moves (as ``test_device.py``'s in-process test does):
  a rekey after REKEY_AFTER_TIME and a fresh handshake after REJECT_AFTER_TIME, against a
  wireguard-go that runs on real time.

The ``Lab`` harness from ``test_device.py`` removes every namespace, process and socket
afterwards, on failure too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlay.crypto import key_from_base64
from overlay.device import Device
from overlay.timers import REJECT_AFTER_TIME, REKEY_AFTER_TIME
from overlay.tun import TunDevice
from overlay.uapi import DeviceUpdate, Endpoint, PeerUpdate, serving_pid
from tests.overlay.test_device import (
    TUNNEL_MTU,
    Keys,
    Lab,
    MovedClock,
    iperf3,
    ping,
    run,
    run_in_netns,
    show_peers,
    wait_for,
)

log = logging.getLogger(__name__)

WIREGUARD_GO_ENV = {"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "debug"}
PORT = 51820
#: Underlay addresses (on the veth) of Corral's side and wireguard-go's side, per family.
UNDERLAY = {4: ("198.18.42.1", "198.18.42.2"), 6: ("fd00:42::1", "fd00:42::2")}
#: Tunnel addresses of Corral's side and wireguard-go's side, per family.
INNER = {4: ("10.99.0.1", "10.99.0.2"), 6: ("fd01::1", "fd01::2")}
INNER_PREFIX = {4: 24, 6: 64}
IPERF_SECONDS = 2

#: A UDP echo server for ``udp_exchange``: says "ready" once bound, echoes every datagram until killed.
UDP_ECHO = r"""
import socket, sys
address, port = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((address, port))
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(2048)
    sock.sendto(data, peer)
"""

#: Its client: one datagram every ``wait`` seconds until the same bytes come back (exit 0) or
#: ``tries`` pass (exit 1).
UDP_CLIENT = r"""
import os, socket, sys
address, port, tries, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(wait)
for attempt in range(tries):
    message = f"corral-{os.getpid()}-{attempt}".encode()
    sock.sendto(message, (address, port))
    try:
        while True:
            if sock.recv(2048) == message:
                sys.exit(0)
    except (socket.timeout, ConnectionRefusedError):
        pass
sys.exit(1)
"""


def udp_exchange(server_ns: str, client_ns: str, address: str, port: int = 7777, tries: int = 20,
                 wait: float = 0.5) -> bool:
    """A UDP datagram from ``client_ns`` to ``address`` (in ``server_ns``) and its echo back,
    within ``tries`` datagrams each given ``wait`` seconds."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", UDP_ECHO, address, str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == b"ready\n", f"UDP echo server on {address} did not start"
        done = subprocess.run(["ip", "netns", "exec", client_ns, sys.executable, "-c", UDP_CLIENT, address,
                               str(port), str(tries), str(wait)], capture_output=True,
                              timeout=tries * wait + 10, check=False)
        return done.returncode == 0
    finally:
        server.kill()
        server.wait()


def endpoint(address: str, port: int = PORT) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass
class Pair:
    lab: Lab
    ns_corral: str
    ns_go: str
    if_corral: str
    if_go: str
    key_corral: Keys
    key_go: Keys
    corral_log: Path | None


@pytest.fixture
def lab(require: Callable[[str], None], tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0 or shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        require("root, ip netns, TUN and wireguard-go")
    for tool in ("wireguard-go", "wg", "iperf3"):
        if shutil.which(tool) is None:
            require(tool)
    harness = Lab(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def add_address(ns: str, ifname: str, address: str) -> None:
    """An extra address; IPv6 without duplicate address detection, so it is usable at once."""
    run("ip", "-n", ns, "addr", "add", address, "dev", ifname, *(["nodad"] if ":" in address else []))


def make_pair(lab: Lab, *, underlay: int = 4, inner: tuple[int, ...] = (4,),
              corral_in_process: bool = False) -> Pair:
    """Namespaces A and B joined by a veth (both families on it), wireguard-go running and
    configured in B; Corral's ``overlay.main`` running and configured in A unless the test runs
    Corral itself (``corral_in_process``: the interface name is then the test's to create)."""
    ns_corral, ns_go = lab.netns("A"), lab.netns("B")
    lab.veth(ns_corral, ns_go, f"{UNDERLAY[4][0]}/24", f"{UNDERLAY[4][1]}/24")
    add_address(ns_corral, f"cva{lab.suffix}", f"{UNDERLAY[6][0]}/64")
    add_address(ns_go, f"cvb{lab.suffix}", f"{UNDERLAY[6][1]}/64")
    if_go = lab.ifname("g")
    # In process there is no UAPI socket: the name is not Lab's, whose close stops its server.
    if_corral = f"cwk{lab.suffix}" if corral_in_process else lab.ifname("c")
    key_corral, key_go = Keys.generate(), Keys.generate()
    corral_log = None if corral_in_process else lab.corral(ns_corral, if_corral, foreground=True)
    lab.spawn(ns_go, "wireguard-go", "-f", if_go, env=WIREGUARD_GO_ENV)
    wait_for(lambda: serving_pid(if_go) is not None, "wireguard-go's UAPI socket")
    corral_side, go_side = UNDERLAY[underlay]
    lab.configure(if_go, key_go, PORT, key_corral,
                  ",".join(f"{INNER[family][0]}/{32 if family == 4 else 128}" for family in inner),
                  endpoint(corral_side))
    if not corral_in_process:
        lab.configure(if_corral, key_corral, PORT, key_go,
                      ",".join(f"{INNER[family][1]}/{32 if family == 4 else 128}" for family in inner),
                      endpoint(go_side))
    interfaces = [(ns_go, if_go, 1)] + ([] if corral_in_process else [(ns_corral, if_corral, 0)])
    for ns, ifname, side in interfaces:
        first, *rest = inner
        lab.address(ns, ifname, f"{INNER[first][side]}/{INNER_PREFIX[first]}")
        for family in rest:
            add_address(ns, ifname, f"{INNER[family][side]}/{INNER_PREFIX[family]}")
    return Pair(lab, ns_corral, ns_go, if_corral, if_go, key_corral, key_go, corral_log)


@pytest.fixture
def pair(lab: Lab) -> Pair:
    return make_pair(lab)


def assert_handshake_shown(ifname: str, peer: Keys, endpoint: str) -> None:
    (shown,) = show_peers(ifname)
    assert shown.public_key == peer.public
    assert shown.endpoint == endpoint
    assert time.time() - 30 < shown.latest_handshake <= time.time() + 1
    assert shown.rx_bytes > 0 and shown.tx_bytes > 0


def assert_iperf3_both_ways(pair: Pair) -> None:
    """A TCP stream each way through the tunnel; only that it carried data, not how fast."""
    to_go = iperf3(pair.ns_go, pair.ns_corral, INNER[4][1], seconds=IPERF_SECONDS)
    to_corral = iperf3(pair.ns_corral, pair.ns_go, INNER[4][0], seconds=IPERF_SECONDS)
    log.info("iperf3 at MTU %d: Corral -> wireguard-go %.0f Mbit/s, wireguard-go -> Corral %.0f Mbit/s",
             TUNNEL_MTU, to_go / 1e6, to_corral / 1e6)
    assert to_go > 0
    assert to_corral > 0


@pytest.mark.privileged
def test_corral_initiates_to_wireguard_go(pair: Pair) -> None:
    assert ping(pair.ns_corral, "10.99.0.2")
    assert ping(pair.ns_go, "10.99.0.1")
    assert_handshake_shown(pair.if_corral, pair.key_go, "198.18.42.2:51820")
    assert_handshake_shown(pair.if_go, pair.key_corral, "198.18.42.1:51820")
    assert pair.corral_log is not None
    assert "handshake complete (initiator)" in pair.corral_log.read_text()
    assert_iperf3_both_ways(pair)


@pytest.mark.privileged
def test_wireguard_go_initiates_to_corral(pair: Pair) -> None:
    assert ping(pair.ns_go, "10.99.0.1")
    assert ping(pair.ns_corral, "10.99.0.2")
    assert_handshake_shown(pair.if_go, pair.key_corral, "198.18.42.1:51820")
    assert_handshake_shown(pair.if_corral, pair.key_go, "198.18.42.2:51820")
    assert pair.corral_log is not None
    corral_log = pair.corral_log.read_text()
    assert "handshake complete (responder)" in corral_log
    assert "sending handshake initiation" not in corral_log
    assert_iperf3_both_ways(pair)


@pytest.mark.privileged
@pytest.mark.parametrize("underlay", [4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
@pytest.mark.parametrize("corral_initiates", [True, False], ids=["corral-initiates", "go-initiates"])
def test_ipv4_and_ipv6_inside_the_tunnel(lab: Lab, underlay: int, corral_initiates: bool) -> None:
    pair = make_pair(lab, underlay=underlay, inner=(4, 6))
    corral_side, go_side = UNDERLAY[underlay]
    namespaces = {"corral": pair.ns_corral, "go": pair.ns_go}
    initiator, responder = ("corral", "go") if corral_initiates else ("go", "corral")
    # The first datagram (staged until the handshake is done) is IPv6, then each family each way.
    for client, server, family in ((initiator, responder, 6), (responder, initiator, 6),
                                   (responder, initiator, 4), (initiator, responder, 4)):
        address = INNER[family][0 if server == "corral" else 1]
        assert udp_exchange(namespaces[server], namespaces[client], address), f"UDP {client} -> [{address}]"
    assert_handshake_shown(pair.if_corral, pair.key_go, endpoint(go_side))
    assert_handshake_shown(pair.if_go, pair.key_corral, endpoint(corral_side))
    assert pair.corral_log is not None
    corral_log = pair.corral_log.read_text()
    if corral_initiates:
        assert "handshake complete (initiator)" in corral_log
    else:
        assert "handshake complete (responder)" in corral_log
        assert "sending handshake initiation" not in corral_log


# -- in process, on a moved clock, against wireguard-go on real time ---------------------------

@pytest.mark.privileged
@pytest.mark.parametrize("corral_initiates", [True, False], ids=["corral-initiates", "go-initiates"])
def test_clock_driven_rekey_with_wireguard_go(lab: Lab, corral_initiates: bool) -> None:
    """Corral's ``Device`` in A on a real TUN and a ``MovedClock``; wireguard-go in B.

    Past REKEY_AFTER_TIME (Corral's clock) the initiator of the session rekeys on its next
    send: Corral does when it initiated, and as the responder it does not (only the initiator
    rekeys on age, in wireguard-go too). Past REJECT_AFTER_TIME with no traffic, Corral's keys
    are dead whichever side initiated: a packet wireguard-go sends on its (young) keys is
    dropped, and the next packet from A is staged, starts a handshake and gets through. Pings both ways after each step; handshakes are read from ``Device.status``
    and from ``wg show`` on B (whole seconds: the test waits a second before each rekey)."""
    pair = make_pair(lab, corral_in_process=True)
    ns_a, ns_b, if_go = pair.ns_corral, pair.ns_go, pair.if_go

    async def scenario() -> None:
        clock = MovedClock()
        tun = TunDevice.create(pair.if_corral, vnet_hdr=True)  # in A: this thread entered it
        device = Device(pair.if_corral, tun, clock=clock)
        try:
            tun.set_mtu(TUNNEL_MTU)
            device.start()
            device.apply(DeviceUpdate(
                private_key=key_from_base64(pair.key_corral.private), listen_port=PORT,
                peers=[PeerUpdate(key_from_base64(pair.key_go.public),
                                  allowed_ips=[ipaddress.ip_network(f"{INNER[4][1]}/32")],
                                  endpoint=Endpoint(ipaddress.ip_address(UNDERLAY[4][1]), PORT))]))
            await asyncio.to_thread(Lab.address, ns_a, pair.if_corral, f"{INNER[4][0]}/24")

            def corral_handshake() -> int:
                return device.status().peers[0].last_handshake_ns

            async def go_handshake() -> int:
                (shown,) = await asyncio.to_thread(show_peers, if_go)
                return shown.latest_handshake

            async def ping_from(side: str) -> None:
                ns, address = (ns_a, INNER[4][1]) if side == "corral" else (ns_b, INNER[4][0])
                assert await asyncio.to_thread(ping, ns, address), f"ping from {side}'s side"

            async def both_ways(first: str) -> None:
                await ping_from(first)
                await ping_from("go" if first == "corral" else "corral")

            async def wait_newer(old_corral: int, old_go: int, what: str) -> None:
                """Until both sides show a handshake newer than ``old_*``."""
                deadline = time.monotonic() + 5
                while not (corral_handshake() > old_corral and await go_handshake() > old_go):
                    assert time.monotonic() < deadline, f"timed out waiting for {what}"
                    await asyncio.sleep(0.05)

            # The session: the side that pings first initiates.
            await both_ways("corral" if corral_initiates else "go")
            corral_first, go_first = corral_handshake(), await go_handshake()
            assert corral_first and go_first

            # Past REKEY_AFTER_TIME on Corral's clock.
            await asyncio.sleep(1.1)
            clock.offset += REKEY_AFTER_TIME + 1
            await ping_from("corral")  # data on the old keypair, which it may still send on
            if corral_initiates:
                await wait_newer(corral_first, go_first, "the rekey")
            await ping_from("go")
            await both_ways("corral")
            if not corral_initiates:
                assert corral_handshake() == corral_first, "the responder does not rekey on age"
                assert await go_handshake() == go_first
            corral_second, go_second = corral_handshake(), await go_handshake()

            # Past REJECT_AFTER_TIME without traffic: every key Corral has is dead.
            await asyncio.sleep(1.1)
            clock.offset += REJECT_AFTER_TIME + 1
            # wireguard-go's keys are young on its own clock; Corral drops what comes on them.
            assert not await asyncio.to_thread(udp_exchange, ns_a, ns_b, INNER[4][0], tries=1, wait=1.0)
            assert corral_handshake() == corral_second
            # One datagram from A, given 3 s: it is staged, starts a fresh handshake and is sent.
            assert await asyncio.to_thread(udp_exchange, ns_b, ns_a, INNER[4][1], tries=1, wait=3.0)
            await wait_newer(corral_second, go_second, "a fresh handshake")
            await both_ways("go")
            (shown,) = await asyncio.to_thread(show_peers, if_go)
            assert shown.endpoint == endpoint(UNDERLAY[4][0])
            assert device.status().peers[0].endpoint == Endpoint(ipaddress.ip_address(UNDERLAY[4][1]), PORT)
        finally:
            await device.close()
            tun.close()

    run_in_netns(ns_a, scenario)
