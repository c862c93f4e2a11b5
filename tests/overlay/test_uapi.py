"""overlay.uapi: the WireGuard cross-platform UAPI.

Tables of request lines and expected answers for the pure protocol, the ``MemoryDevice``
semantics of a set, the server over a unix socket in a private directory, and (privileged) the
real ``wg`` tool against a served ``MemoryDevice`` in /var/run/wireguard.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import secrets
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlay.crypto import ZERO_KEY, public_key
from overlay.uapi import (
    DEFAULT_SOCKET_DIR,
    MAX_LINE,
    DeviceStatus,
    DeviceUpdate,
    Endpoint,
    MemoryDevice,
    PeerStatus,
    PeerUpdate,
    UapiError,
    UapiServer,
    format_get,
    format_set,
    handle_set,
    parse_get,
    parse_prefix,
    parse_set,
)

PRIVATE = bytes(range(1, 33))
PEER_A = bytes([0xA0] * 32)
PEER_B = bytes([0xB0] * 32)
PSK = bytes([0x55] * 32)
net = ipaddress.ip_network


def seeded() -> MemoryDevice:
    """A device with a key, a port and two peers, to show that refused requests change nothing."""
    return MemoryDevice(DeviceStatus(
        private_key=PRIVATE, listen_port=51820, peers=[
            PeerStatus(PEER_A, allowed_ips=[net("10.244.1.0/24")]),
            PeerStatus(PEER_B, endpoint=Endpoint.parse("192.0.2.2:51820"),
                       allowed_ips=[net("10.244.2.0/24")]),
        ]))


# -- parse_set --------------------------------------------------------------------------------


def test_parse_set_reads_every_key() -> None:
    lines = [
        f"private_key={PRIVATE.hex()}",
        "listen_port=51820",
        "fwmark=4660",
        "replace_peers=true",
        f"public_key={PEER_A.hex().upper()}",
        f"preshared_key={PSK.hex()}",
        "endpoint=[fd00::1]:51821",
        "persistent_keepalive_interval=25",
        "replace_allowed_ips=true",
        "allowed_ip=10.244.1.7/24",
        "allowed_ip=fd00::/64",
        "allowed_ip=-10.9.0.0/16",
        "protocol_version=1",
        f"public_key={PEER_B.hex()}",
        "update_only=true",
        f"public_key={PEER_A.hex()}",
        "remove=true",
    ]
    assert parse_set(lines) == DeviceUpdate(
        private_key=PRIVATE, listen_port=51820, fwmark=4660, replace_peers=True, peers=[
            PeerUpdate(PEER_A, preshared_key=PSK, endpoint=Endpoint.parse("[fd00::1]:51821"),
                       persistent_keepalive_interval=25, replace_allowed_ips=True,
                       allowed_ips=[net("10.244.1.0/24"), net("fd00::/64")],
                       remove_allowed_ips=[net("10.9.0.0/16")]),
            PeerUpdate(PEER_B, update_only=True),
            PeerUpdate(PEER_A, remove=True),
        ])


def test_replace_allowed_ips_drops_the_prefixes_given_before_it() -> None:
    update = parse_set([f"public_key={PEER_A.hex()}", "allowed_ip=10.0.0.0/8",
                        "replace_allowed_ips=true", "allowed_ip=10.1.0.0/16"])
    assert update.peers[0].allowed_ips == [net("10.1.0.0/16")]


def test_the_later_line_about_a_prefix_wins() -> None:
    update = parse_set([f"public_key={PEER_A.hex()}", "allowed_ip=10.0.0.0/8",
                        "allowed_ip=-10.0.0.0/8", "allowed_ip=-10.1.0.0/16",
                        "allowed_ip=10.1.0.0/16"])
    assert update.peers[0].allowed_ips == [net("10.1.0.0/16")]
    assert update.peers[0].remove_allowed_ips == [net("10.0.0.0/8")]


@pytest.mark.parametrize("update", [
    DeviceUpdate(),
    DeviceUpdate(private_key=ZERO_KEY, listen_port=0, fwmark=0),
    DeviceUpdate(private_key=PRIVATE, listen_port=65535, fwmark=2**32 - 1, replace_peers=True,
                 peers=[PeerUpdate(PEER_A, preshared_key=ZERO_KEY,
                                   endpoint=Endpoint.parse("[fe80::1%eth0]:1"),
                                   persistent_keepalive_interval=0, replace_allowed_ips=True,
                                   allowed_ips=[net("0.0.0.0/0"), net("::/0")],
                                   remove_allowed_ips=[net("10.0.0.1/32")]),
                        PeerUpdate(PEER_B, remove=True),
                        PeerUpdate(PEER_A, update_only=True)]),
])
def test_format_set_and_parse_set_round_trip(update: DeviceUpdate) -> None:
    assert parse_set(format_set(update)) == update


# Each row: the request body and the errno it must be refused with.
K = PEER_A.hex()
BAD_SETS: list[tuple[str, list[str], int]] = [
    ("line without =", ["listen_port"], errno.EPROTO),
    ("blank line inside", ["listen_port=1", "", "fwmark=1"], errno.EPROTO),
    ("private key too short", [f"private_key={K[:-1]}"], errno.EINVAL),
    ("private key too long", [f"private_key={K}00"], errno.EINVAL),
    ("private key not hex", [f"private_key={'g' * 64}"], errno.EINVAL),
    ("private key base64", ["private_key=wOmZGA2+AYqJRb+fyt3WVE6bCFK9ed7tKhvMSsriD1w="],
     errno.EINVAL),
    ("private key with spaces", [f"private_key={K[:32]} {K[33:]}"], errno.EINVAL),
    ("port too big", ["listen_port=65536"], errno.EINVAL),
    ("port negative", ["listen_port=-1"], errno.EINVAL),
    ("port with sign", ["listen_port=+1"], errno.EINVAL),
    ("port empty", ["listen_port="], errno.EINVAL),
    ("port non-ASCII digits", ["listen_port=\u0661\u0662"], errno.EINVAL),
    ("port hex", ["listen_port=0x10"], errno.EINVAL),
    ("fwmark too big", [f"fwmark={2**32}"], errno.EINVAL),
    ("replace_peers false", ["replace_peers=false"], errno.EINVAL),
    ("unknown device key", ["mtu=1420"], errno.EINVAL),
    ("allowed_ip without peer", ["allowed_ip=10.0.0.0/8"], errno.EINVAL),
    ("endpoint without peer", ["endpoint=1.2.3.4:5"], errno.EINVAL),
    ("device key after a peer", [f"public_key={K}", "listen_port=1"], errno.EINVAL),
    ("public key bad hex", ["public_key=xyz"], errno.EINVAL),
    ("unknown peer key", [f"public_key={K}", "allowed_ips=10.0.0.0/8"], errno.EINVAL),
    ("remove not true", [f"public_key={K}", "remove=1"], errno.EINVAL),
    ("update_only not true", [f"public_key={K}", "update_only=yes"], errno.EINVAL),
    ("replace_allowed_ips not true", [f"public_key={K}", "replace_allowed_ips=TRUE"],
     errno.EINVAL),
    ("protocol version 2", [f"public_key={K}", "protocol_version=2"], errno.EINVAL),
    ("preshared key bad", [f"public_key={K}", "preshared_key=00"], errno.EINVAL),
    ("keepalive too big", [f"public_key={K}", "persistent_keepalive_interval=65536"],
     errno.EINVAL),
    ("endpoint without port", [f"public_key={K}", "endpoint=1.2.3.4"], errno.EINVAL),
    ("endpoint empty port", [f"public_key={K}", "endpoint=1.2.3.4:"], errno.EINVAL),
    ("endpoint port too big", [f"public_key={K}", "endpoint=1.2.3.4:65536"], errno.EINVAL),
    ("endpoint IPv6 unbracketed", [f"public_key={K}", "endpoint=fd00::1:51820"], errno.EINVAL),
    ("endpoint IPv6 no port", [f"public_key={K}", "endpoint=[fd00::1]"], errno.EINVAL),
    ("endpoint IPv4 bracketed", [f"public_key={K}", "endpoint=[1.2.3.4]:5"], errno.EINVAL),
    ("endpoint host name", [f"public_key={K}", "endpoint=example.com:51820"], errno.EINVAL),
    ("allowed_ip without length", [f"public_key={K}", "allowed_ip=10.0.0.1"], errno.EINVAL),
    ("allowed_ip /33", [f"public_key={K}", "allowed_ip=10.0.0.0/33"], errno.EINVAL),
    ("allowed_ip /129", [f"public_key={K}", "allowed_ip=fd00::/129"], errno.EINVAL),
    ("allowed_ip netmask", [f"public_key={K}", "allowed_ip=10.0.0.0/255.0.0.0"], errno.EINVAL),
    ("allowed_ip leading zero", [f"public_key={K}", "allowed_ip=10.0.0.0/08"], errno.EINVAL),
    ("allowed_ip zone", [f"public_key={K}", "allowed_ip=fe80::%eth0/64"], errno.EINVAL),
    ("allowed_ip garbage", [f"public_key={K}", "allowed_ip=ten/8"], errno.EINVAL),
    ("bad line after good ones", ["listen_port=1", "replace_peers=true", f"public_key={K}",
                                  "allowed_ip=10.0.0.0/8", "endpoint=nope"], errno.EINVAL),
]


@pytest.mark.parametrize(("lines", "code"), [row[1:] for row in BAD_SETS],
                         ids=[row[0] for row in BAD_SETS])
def test_bad_set_is_refused_with_errno_and_changes_nothing(lines: list[str], code: int) -> None:
    with pytest.raises(UapiError) as caught:
        parse_set(lines)
    assert caught.value.errno == code
    assert K not in str(caught.value), "key material must not reach messages"
    device = seeded()
    before = device.status()
    assert handle_set(device, lines) == f"errno={-code}\n\n"
    assert device.status() == before


# -- format_get / parse_get ---------------------------------------------------------------------


def test_format_get_writes_what_wireguard_go_writes() -> None:
    status = DeviceStatus(private_key=PRIVATE, listen_port=51820, fwmark=7, peers=[
        PeerStatus(PEER_A, preshared_key=PSK, endpoint=Endpoint.parse("[fd00::1]:51821"),
                   last_handshake_ns=1_700_000_000_123_456_789, rx_bytes=10, tx_bytes=20,
                   persistent_keepalive_interval=25,
                   allowed_ips=[net("10.244.1.0/24"), net("fd00::/64")]),
        PeerStatus(PEER_B),
    ])
    assert format_get(status) == (
        f"private_key={PRIVATE.hex()}\n"
        "listen_port=51820\n"
        "fwmark=7\n"
        f"public_key={PEER_A.hex()}\n"
        f"preshared_key={PSK.hex()}\n"
        "protocol_version=1\n"
        "endpoint=[fd00::1]:51821\n"
        "last_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=123456789\n"
        "tx_bytes=20\n"
        "rx_bytes=10\n"
        "persistent_keepalive_interval=25\n"
        "allowed_ip=10.244.1.0/24\n"
        "allowed_ip=fd00::/64\n"
        f"public_key={PEER_B.hex()}\n"
        f"preshared_key={ZERO_KEY.hex()}\n"
        "protocol_version=1\n"
        "last_handshake_time_sec=0\n"
        "last_handshake_time_nsec=0\n"
        "tx_bytes=0\n"
        "rx_bytes=0\n"
        "persistent_keepalive_interval=0\n"
        "errno=0\n"
        "\n")


def test_format_get_of_an_empty_device_leaves_unset_fields_out() -> None:
    assert format_get(DeviceStatus()) == "errno=0\n\n"


def test_format_get_and_parse_get_round_trip() -> None:
    status = seeded().status()
    status.fwmark = 99
    status.peers[0].last_handshake_ns = 5_000_000_001
    status.peers[0].preshared_key = PSK
    assert parse_get(format_get(status)) == status


def test_parse_get_raises_the_devices_errno() -> None:
    with pytest.raises(UapiError) as caught:
        parse_get("errno=-22\n\n")
    assert caught.value.errno == errno.EINVAL


@pytest.mark.parametrize(("text", "prefix"), [
    ("10.244.1.7/24", "10.244.1.0/24"),
    ("fd00::1/64", "fd00::/64"),
    ("0.0.0.0/0", "0.0.0.0/0"),
    ("192.0.2.1/32", "192.0.2.1/32"),
])
def test_prefixes_are_masked_like_the_trie_stores_them(text: str, prefix: str) -> None:
    assert str(parse_prefix(text)) == prefix


# -- MemoryDevice semantics ----------------------------------------------------------------------


def apply(device: MemoryDevice, *lines: str) -> DeviceStatus:
    assert handle_set(device, lines) == "errno=0\n\n"
    return device.status()


def allowed(status: DeviceStatus) -> dict[bytes, list[str]]:
    return {peer.public_key: [str(p) for p in peer.allowed_ips] for peer in status.peers}


def test_replace_peers_removes_every_peer_before_the_new_ones() -> None:
    status = apply(seeded(), "replace_peers=true", f"public_key={PEER_B.hex()}")
    assert [peer.public_key for peer in status.peers] == [PEER_B]
    assert status.peers[0].endpoint is None, "a replaced peer starts afresh"


def test_update_only_never_creates_but_updates() -> None:
    device = MemoryDevice()
    assert apply(device, f"public_key={PEER_A.hex()}", "update_only=true",
                 "allowed_ip=10.0.0.0/8").peers == []
    status = apply(seeded(), f"public_key={PEER_A.hex()}", "update_only=true",
                   "persistent_keepalive_interval=25")
    assert status.peers[0].persistent_keepalive_interval == 25


def test_remove_wins_over_its_section_and_a_later_section_recreates() -> None:
    status = apply(seeded(), f"public_key={PEER_A.hex()}", "remove=true",
                   "allowed_ip=10.9.0.0/16")
    assert [peer.public_key for peer in status.peers] == [PEER_B]
    status = apply(seeded(), f"public_key={PEER_A.hex()}", "remove=true",
                   f"public_key={PEER_A.hex()}")
    assert allowed(status)[PEER_A] == []


def test_a_prefix_moves_to_the_peer_that_claims_it() -> None:
    status = apply(seeded(), f"public_key={PEER_B.hex()}", "allowed_ip=10.244.1.0/24")
    assert allowed(status) == {PEER_A: [], PEER_B: ["10.244.2.0/24", "10.244.1.0/24"]}


def test_replace_and_incremental_allowed_ips() -> None:
    device = seeded()
    status = apply(device, f"public_key={PEER_B.hex()}", "replace_allowed_ips=true",
                   "allowed_ip=10.1.0.0/16", "allowed_ip=10.2.0.0/16")
    assert allowed(status)[PEER_B] == ["10.1.0.0/16", "10.2.0.0/16"]
    status = apply(device, f"public_key={PEER_B.hex()}", "allowed_ip=-10.1.0.0/16",
                   "allowed_ip=-10.244.1.0/24")
    assert allowed(status) == {PEER_A: ["10.244.1.0/24"], PEER_B: ["10.2.0.0/16"]}, \
        "removing a prefix another peer owns leaves it there"


def test_zero_keys_clear_private_and_preshared_keys() -> None:
    device = seeded()
    apply(device, f"public_key={PEER_A.hex()}", f"preshared_key={PSK.hex()}")
    status = apply(device, f"private_key={ZERO_KEY.hex()}", f"public_key={PEER_A.hex()}",
                   f"preshared_key={ZERO_KEY.hex()}")
    assert status.private_key is None and status.peers[0].preshared_key is None
    assert "private_key" not in format_get(status)


def test_the_device_is_never_its_own_peer() -> None:
    own = public_key(PRIVATE)
    assert apply(seeded(), f"public_key={own.hex()}").peers == seeded().status().peers
    device = MemoryDevice()
    apply(device, f"public_key={own.hex()}")
    status = apply(device, f"private_key={PRIVATE.hex()}")
    assert status.peers == [], "taking the key of a peer drops that peer"


class RefusingDevice(MemoryDevice):
    """Refuses every set the way a device that cannot bind its port does."""

    def apply(self, update: DeviceUpdate) -> None:
        raise UapiError(errno.EADDRINUSE, "port in use")


class BrokenDevice(MemoryDevice):
    def apply(self, update: DeviceUpdate) -> None:
        raise RuntimeError("bug")


def test_a_device_refusal_and_a_device_bug_both_answer_errno() -> None:
    assert handle_set(RefusingDevice(), ["listen_port=1"]) == f"errno={-errno.EADDRINUSE}\n\n"
    assert handle_set(BrokenDevice(), ["listen_port=1"]) == f"errno={-errno.ENOANO}\n\n"


# -- the server on a private directory ------------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short on purpose: a unix socket path must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="uapi"))
    yield path / "wireguard"
    shutil.rmtree(path)


@dataclass
class Served:
    server: UapiServer
    device: MemoryDevice


@pytest.fixture
async def served(socket_dir: Path) -> AsyncIterator[Served]:
    device = seeded()
    async with UapiServer("ctwgtest", device, socket_dir=socket_dir) as server:
        yield Served(server, device)


async def exchange(path: Path, request: bytes, *, half_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request)
    if half_close:
        writer.write_eof()
    await writer.drain()
    try:
        # Half-closed: read to the end; else the server waits for a next request, as wg
        # closes after one answer, so read one answer (no blank line comes before its end).
        answer = await asyncio.wait_for(
            reader.read() if half_close else reader.readuntil(b"\n\n"), 10)
    except asyncio.IncompleteReadError as closed:
        answer = closed.partial
    writer.close()
    await writer.wait_closed()
    return answer


async def test_server_socket_is_private_and_removed_on_close(socket_dir: Path) -> None:
    server = UapiServer("ctwgtest", MemoryDevice(), socket_dir=socket_dir)
    await server.start()
    assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o755
    info = server.path.lstat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert [p.name for p in socket_dir.iterdir()] == ["ctwgtest.sock"]
    await server.close()
    assert not server.path.exists()


async def test_get_and_set_over_the_socket(served: Served) -> None:
    answer = await exchange(served.server.path, b"get=1\n\n")
    assert parse_get(answer.decode()) == served.device.status()
    request = f"set=1\npublic_key={PEER_A.hex()}\nendpoint=192.0.2.9:7\n\n".encode()
    assert await exchange(served.server.path, request) == b"errno=0\n\n"
    assert served.device.status().peers[0].endpoint == Endpoint.parse("192.0.2.9:7")


async def test_several_requests_share_a_connection(served: Served) -> None:
    request = (b"set=1\nlisten_port=1\n\n" b"set=1\nlisten_port=oops\nfwmark=3\n\n"
               b"get=1\n\n")
    answer = (await exchange(served.server.path, request, half_close=True)).decode()
    first, second, rest = answer.split("\n\n", 2)
    assert (first, second) == ("errno=0", f"errno={-errno.EINVAL}")
    status = parse_get(rest)
    assert (status.listen_port, status.fwmark) == (1, 0), "the refused request changed nothing"


async def test_a_set_ended_by_end_of_input_is_applied(served: Served) -> None:
    answer = await exchange(served.server.path, b"set=1\nfwmark=5\n", half_close=True)
    assert answer == b"errno=0\n\n" and served.device.status().fwmark == 5


async def test_get_with_trailing_data_is_refused(served: Served) -> None:
    answer = await exchange(served.server.path, b"get=1\nx\n", half_close=True)
    assert answer == f"errno={-errno.EINVAL}\n\n".encode()


async def test_unknown_operation_closes_the_connection(served: Served) -> None:
    assert await exchange(served.server.path, b"delete=1\n\n") == b""


async def test_an_overlong_line_drops_only_its_connection(served: Served) -> None:
    request = b"set=1\nallowed_ip=" + b"1" * (MAX_LINE + 1) + b"\n\n"
    assert await exchange(served.server.path, request) == b""
    assert parse_get((await exchange(served.server.path, b"get=1\n\n")).decode()) == \
        served.device.status()


async def test_device_refusal_reaches_the_client(socket_dir: Path) -> None:
    async with UapiServer("ctwgtest", RefusingDevice(), socket_dir=socket_dir) as server:
        answer = await exchange(server.path, b"set=1\nlisten_port=1\n\n")
    assert answer == f"errno={-errno.EADDRINUSE}\n\n".encode()


async def test_stale_socket_is_replaced_and_a_live_one_is_not(socket_dir: Path) -> None:
    socket_dir.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_dir / "ctwgtest.sock"))
    stale.close()  # bound, never listening: what a crashed process leaves behind
    async with UapiServer("ctwgtest", seeded(), socket_dir=socket_dir) as server:
        assert parse_get((await exchange(server.path, b"get=1\n\n")).decode()).listen_port
        with pytest.raises(FileExistsError):
            await UapiServer("ctwgtest", MemoryDevice(), socket_dir=socket_dir).start()
        assert server.path.exists(), "the refused server left the live socket alone"


async def test_a_regular_file_in_the_way_is_not_replaced(socket_dir: Path) -> None:
    socket_dir.mkdir(parents=True)
    (socket_dir / "ctwgtest.sock").write_text("not a socket")
    with pytest.raises(FileExistsError):
        await UapiServer("ctwgtest", MemoryDevice(), socket_dir=socket_dir).start()


@pytest.mark.parametrize("name", ["", "a/b", "..", "sixteen-chars-xx"])
def test_interface_names_wg_cannot_use_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        UapiServer(name, MemoryDevice())


# -- the real wg tool (privileged) ---------------------------------------------------------------


async def wg(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "wg", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(
        process.communicate(stdin.encode() if stdin is not None else None), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def wg_ok(*args: str, stdin: str | None = None) -> str:
    code, out, err = await wg(*args, stdin=stdin)
    assert code == 0, f"wg {' '.join(args)}: {err}"
    return out


@pytest.fixture
def ifname(require: Callable[[str], None]) -> Iterator[str]:
    if os.geteuid() != 0:
        require("root (for /var/run/wireguard)")
    if shutil.which("wg") is None:
        require("wg (wireguard-tools)")
    name = f"ctwg{secrets.token_hex(2)}"
    yield name
    (DEFAULT_SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)


@pytest.mark.privileged
async def test_wg_set_show_showconf_and_remove(ifname: str, tmp_path: Path) -> None:
    device = MemoryDevice()
    async with UapiServer(ifname, device) as server:
        private = (await wg_ok("genkey")).strip()
        public = (await wg_ok("pubkey", stdin=private)).strip()
        peer = (await wg_ok("pubkey", stdin=(await wg_ok("genkey")))).strip()
        key_file = tmp_path / "private"
        key_file.write_text(private + "\n")
        key_file.chmod(0o600)

        await wg_ok("set", ifname, "private-key", str(key_file), "listen-port", "51820",
                    "peer", peer, "allowed-ips", "10.244.1.0/24,fd00::/64",
                    "endpoint", "127.0.0.1:51821", "persistent-keepalive", "25")

        dump = (await wg_ok("show", ifname, "dump")).splitlines()
        assert dump == [
            f"{private}\t{public}\t51820\toff",
            f"{peer}\t(none)\t127.0.0.1:51821\t10.244.1.0/24,fd00::/64\t0\t0\t0\t25",
        ]
        assert await wg_ok("showconf", ifname) == (
            "[Interface]\n"
            "ListenPort = 51820\n"
            f"PrivateKey = {private}\n"
            "\n"
            "[Peer]\n"
            f"PublicKey = {peer}\n"
            "AllowedIPs = 10.244.1.0/24, fd00::/64\n"
            "Endpoint = 127.0.0.1:51821\n"
            "PersistentKeepalive = 25\n")
        assert await wg_ok("show", ifname, "allowed-ips") == (
            f"{peer}\t10.244.1.0/24 fd00::/64\n")
        assert ifname in (await wg_ok("show", "interfaces")).split()

        # A malformed set from a raw client: refused with errno, nothing changed.
        before = device.status()
        answer = await exchange(server.path, b"set=1\nlisten_port=1\npublic_key=zz\n\n")
        assert answer == f"errno={-errno.EINVAL}\n\n".encode()
        assert device.status() == before
        assert (await wg_ok("show", ifname, "dump")).splitlines() == dump

        await wg_ok("set", ifname, "peer", peer, "remove")
        assert (await wg_ok("show", ifname, "dump")).splitlines() == dump[:1]
    assert not (DEFAULT_SOCKET_DIR / f"{ifname}.sock").exists()


@pytest.mark.privileged
async def test_wg_reports_the_devices_errno(ifname: str) -> None:
    async with UapiServer(ifname, RefusingDevice()):
        code, _, err = await wg("set", ifname, "listen-port", "51820")
    assert code != 0
    assert os.strerror(errno.EADDRINUSE) in err
