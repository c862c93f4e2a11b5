"""overlay.device and overlay.main for real: Corral interfaces in network namespaces, driven by ``wg``.

The first tests run the command; their layout is wireguard-go's ``tests/netns.sh``: both ``python -m overlay.main`` processes run
(detached, as ``wireguard-go`` does without ``-f``) in one namespace ``ns0`` whose loopback
carries the encrypted UDP, and each TUN interface is moved into its own namespace ``ns1`` or
``ns2`` after it is created; so a ping from ns1 to ns2 can only travel through the tunnel.
``test_interop.py`` reuses the ``Lab`` harness defined here.

The last test runs two ``Device`` objects in this process, on a thread that entered a fresh
namespace (``setns`` applies to the calling thread only), with packet pipes standing in for the
TUNs and a clock the test moves: that is how rekeying after REKEY_AFTER_TIME and a handshake
after REJECT_AFTER_TIME are seen in seconds instead of minutes.

Every namespace, process and UAPI socket a test creates is removed in ``Lab.close``, on
failure too; the daemons are found through the UAPI socket's peer credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlay.crypto import generate_private_key, key_to_base64, public_key
from overlay.device import Device
from overlay.timers import REJECT_AFTER_TIME, REKEY_AFTER_TIME
from overlay.uapi import DeviceUpdate, Endpoint, PeerUpdate, serving_pid
from tests.overlay.overlaykit import PacketPipe

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SOCKET_DIR = Path("/var/run/wireguard")
TUNNEL_MTU = 1420

#: Raw-socket ICMP echo, run inside a namespace (there is no ping binary): exit 0 on a reply.
PING = r"""
import os, socket, struct, sys, time
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF
target, tries = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
for seq in range(tries):
    payload = b"corral-overlay--" * 4
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    sock.sendto(struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload,
                (target, 0))
    deadline = time.monotonic() + 0.5
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except socket.timeout:
            break
        ihl = (data[0] & 15) * 4
        kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind == 0 and rid == ident and rseq == seq:
            sys.exit(0)
sys.exit(1)
"""


def run(*argv: str, timeout: float = 15, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Keys:
    private: str
    public: str

    @classmethod
    def generate(cls) -> Keys:
        private = generate_private_key()
        return cls(key_to_base64(private), key_to_base64(public_key(private)))


@dataclass(frozen=True)
class PeerDump:
    """One peer line of ``wg show IF dump``."""

    public_key: str
    endpoint: str
    allowed_ips: str
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int


def show_peers(ifname: str) -> list[PeerDump]:
    lines = run("wg", "show", ifname, "dump").splitlines()[1:]
    peers = []
    for line in lines:
        public, _, endpoint, allowed, handshake, rx, tx, _ = line.split("\t")
        peers.append(PeerDump(public, endpoint, allowed, int(handshake), int(rx), int(tx)))
    return peers


class Lab:
    """Namespaces, processes and interfaces of one test; ``close`` removes them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.suffix = secrets.token_hex(2)
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.interfaces: list[str] = []

    def netns(self, role: str) -> str:
        name = f"cw{role}-{self.suffix}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def ifname(self, role: str) -> str:
        name = f"cw{role}{self.suffix}"
        self.interfaces.append(name)
        return name

    def veth(self, left: str, right: str, left_address: str, right_address: str) -> None:
        """A veth pair between two namespaces, addressed (``198.18.x.y/24``) and up."""
        a, b = f"cva{self.suffix}", f"cvb{self.suffix}"
        run("ip", "link", "add", a, "netns", left, "type", "veth", "peer", "name", b, "netns", right)
        for ns, dev, address in ((left, a, left_address), (right, b, right_address)):
            run("ip", "-n", ns, "addr", "add", address, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")

    def spawn(self, ns: str, *argv: str, env: dict[str, str] | None = None,
              log_name: str | None = None) -> Path:
        """Start a foreground process in ``ns``; returns the file its output goes to."""
        path = self.workdir / (log_name or f"{argv[0].rsplit('/', 1)[-1]}-{len(self.processes)}.log")
        with open(path, "wb") as output:
            self.processes.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv], stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})}))
        return path

    def corral(self, ns: str, ifname: str, *, foreground: bool) -> Path:
        """``python -m overlay.main [-f] ifname`` in ``ns`` with debug logs; returns once the UAPI
        socket answers, with the path of the log."""
        argv = [sys.executable, "-m", "overlay.main", *(["-f"] if foreground else []), ifname]
        env = {"PYTHONPATH": str(REPO), "LOG_LEVEL": "debug"}
        path = self.workdir / f"{ifname}.log"
        if foreground:
            self.spawn(ns, *argv, env=env, log_name=path.name)
        else:
            with open(path, "wb") as daemon_log:
                done = subprocess.run(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                      stderr=daemon_log, env={**os.environ, **env}, timeout=15,
                                      check=False)
            assert done.returncode == 0, path.read_text()
            assert done.stdout == b"", "detaching prints nothing"
        wait_for(lambda: serving_pid(ifname) is not None, f"the UAPI socket of {ifname}")
        return path

    def configure(self, ifname: str, keys: Keys, port: int, peer: Keys, allowed_ips: str,
                  endpoint: str | None = None) -> None:
        key_file = self.workdir / f"{ifname}.key"
        key_file.write_text(keys.private + "\n")
        key_file.chmod(0o600)
        argv = ["wg", "set", ifname, "private-key", str(key_file), "listen-port", str(port),
                "peer", peer.public, "allowed-ips", allowed_ips]
        run(*argv, *(["endpoint", endpoint] if endpoint else []))

    @staticmethod
    def address(ns: str, ifname: str, address: str) -> None:
        run("ip", "-n", ns, "link", "set", ifname, "mtu", str(TUNNEL_MTU))
        run("ip", "-n", ns, "addr", "add", address, "dev", ifname)
        run("ip", "-n", ns, "link", "set", ifname, "up")

    @staticmethod
    def _stopped(ifname: str) -> bool:
        return serving_pid(ifname) is None

    def close(self) -> None:
        for ifname in self.interfaces:
            pid = serving_pid(ifname)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for ifname in self.interfaces:
            with contextlib.suppress(AssertionError):
                wait_for(functools.partial(self._stopped, ifname), f"{ifname} to stop", timeout=5)
            pid = serving_pid(ifname)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            (SOCKET_DIR / f"{ifname}.sock").unlink(missing_ok=True)
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)


def ping(ns: str, address: str, tries: int = 20) -> bool:
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PING, address, str(tries)],
                          capture_output=True, timeout=tries + 10, check=False)
    return done.returncode == 0


def iperf3(server_ns: str, client_ns: str, address: str, seconds: int = 3) -> float:
    """Bits per second of one TCP stream from ``client_ns`` to ``address`` in ``server_ns``."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            done = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", address,
                                   "-t", str(seconds), "-J"], capture_output=True, timeout=seconds + 20,
                                  check=False)
            # iperf3 3.12 exits 0 with an "error" key when the server is not listening yet.
            if done.returncode == 0 and "error" not in (report := json.loads(done.stdout)):
                return float(report["end"]["sum_received"]["bits_per_second"])
            time.sleep(0.1)
        raise AssertionError(f"iperf3 failed: {done.stdout[-500:]!r}")
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


@pytest.fixture
def lab(require: Callable[[str], None], tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0 or shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        require("root, ip netns and TUN")
    for tool in ("wg", "iperf3"):
        if shutil.which(tool) is None:
            require(tool)
    harness = Lab(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


@pytest.mark.privileged
def test_two_corral_interfaces_moved_into_namespaces(lab: Lab) -> None:
    ns0, ns1, ns2 = lab.netns("0"), lab.netns("1"), lab.netns("2")
    wg1, wg2 = lab.ifname("a"), lab.ifname("b")
    key1, key2 = Keys.generate(), Keys.generate()
    lab.corral(ns0, wg1, foreground=False)
    lab.corral(ns0, wg2, foreground=False)
    run("ip", "-n", ns0, "link", "set", wg1, "netns", ns1)
    run("ip", "-n", ns0, "link", "set", wg2, "netns", ns2)
    lab.configure(wg1, key1, 41001, key2, "10.99.0.2/32", "127.0.0.1:41002")
    lab.configure(wg2, key2, 41002, key1, "10.99.0.1/32", "127.0.0.1:41001")
    lab.address(ns1, wg1, "10.99.0.1/24")
    lab.address(ns2, wg2, "10.99.0.2/24")

    assert ping(ns1, "10.99.0.2")
    assert ping(ns2, "10.99.0.1")

    for ifname, peer in ((wg1, key2), (wg2, key1)):
        (shown,) = show_peers(ifname)
        assert shown.public_key == peer.public
        assert shown.endpoint.startswith("127.0.0.1:4100")
        assert time.time() - 30 < shown.latest_handshake <= time.time() + 1
        assert shown.rx_bytes > 0 and shown.tx_bytes > 0

    bits = iperf3(ns2, ns1, "10.99.0.2")
    log.info("iperf3 Corral -> Corral at MTU %d: %.0f Mbit/s", TUNNEL_MTU, bits / 1e6)

    # SIGTERM stops a detached interface and removes its socket.
    pid = serving_pid(wg1)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not (SOCKET_DIR / f"{wg1}.sock").exists(), "the UAPI socket to go")
    assert run("ip", "-n", ns1, "link", "show", wg1, check=False) == ""


@pytest.mark.privileged
def test_deleting_the_interface_stops_the_process(lab: Lab) -> None:
    ns = lab.netns("0")
    ifname = lab.ifname("a")
    lab.corral(ns, ifname, foreground=True)
    assert "listening port: " in run("wg", "show", ifname)
    run("ip", "-n", ns, "link", "del", ifname)
    wait_for(lambda: lab.processes[0].poll() is not None, "the process to exit")
    assert not (SOCKET_DIR / f"{ifname}.sock").exists()


# -- in process, on a moved clock --------------------------------------------------------------

CLONE_NEWNET = 0x40000000


def run_in_netns(ns: str, scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` on its own event loop in a thread that entered namespace ``ns``."""
    failure: list[BaseException] = []

    def thread_main() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            asyncio.run(asyncio.wait_for(scenario(), 25))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(error)

    thread = threading.Thread(target=thread_main, name=f"netns {ns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


class MovedClock:
    """``time.monotonic`` plus an offset the test advances."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def ipv4(source: str, destination: str, payload: bytes) -> bytes:
    """An IPv4 header (no options, checksum left zero: nothing on this path checks it) + payload."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
                       ipaddress.IPv4Address(source).packed,
                       ipaddress.IPv4Address(destination).packed) + payload


@pytest.mark.privileged
def test_rekey_expiry_and_cryptokey_routing_on_a_moved_clock(lab: Lab) -> None:
    ns = lab.netns("0")

    async def scenario() -> None:
        clock = MovedClock()
        tun_a, tun_b = PacketPipe("a"), PacketPipe("b")
        a, b = Device("a", tun_a, clock=clock), Device("b", tun_b, clock=clock)
        key_a, key_b = generate_private_key(), generate_private_key()
        try:
            a.start()
            b.start()
            for device, key, peer_key, peer, address in ((a, key_a, key_b, b, "10.99.0.2/32"),
                                                         (b, key_b, key_a, a, "10.99.0.1/32")):
                device.apply(DeviceUpdate(private_key=key, peers=[PeerUpdate(
                    public_key(peer_key), allowed_ips=[ipaddress.ip_network(address)],
                    endpoint=Endpoint(ipaddress.IPv4Address("127.0.0.1"), peer.status().listen_port))]))

            async def a_to_b(payload: bytes) -> None:
                packet = ipv4("10.99.0.1", "10.99.0.2", payload)
                tun_a.outer.send(packet)
                assert await tun_b.receive() == packet

            def handshake_ns(device: Device) -> int:
                return device.status().peers[0].last_handshake_ns

            await a_to_b(b"first")  # staged, handshake, then delivered
            reply = ipv4("10.99.0.2", "10.99.0.1", b"reply")
            tun_b.outer.send(reply)  # the responder's first data confirms its keypair
            assert await tun_a.receive() == reply
            first = handshake_ns(a)
            assert first and handshake_ns(b)

            # Cryptokey routing: B drops what A sends from an address A does not own.
            tun_a.outer.send(ipv4("10.99.0.77", "10.99.0.2", b"spoofed"))
            assert await tun_b.receive(timeout=0.3) is None

            # Past REKEY_AFTER_TIME the initiator's next send still goes out and starts a rekey.
            clock.offset += REKEY_AFTER_TIME + 1
            await a_to_b(b"after rekey-after-time")
            await asyncio.sleep(0.2)
            second = handshake_ns(a)
            assert second > first
            await a_to_b(b"on the new keypair")
            assert handshake_ns(b) > first  # B saw data on its "next" keypair and promoted it

            # Past REJECT_AFTER_TIME nothing is sent on old keys: staged until a new handshake.
            clock.offset += REJECT_AFTER_TIME + 1
            await a_to_b(b"after reject-after-time")
            assert handshake_ns(a) > second
        finally:
            await a.close()
            await b.close()
            tun_a.close()
            tun_b.close()

    run_in_netns(ns, scenario)
