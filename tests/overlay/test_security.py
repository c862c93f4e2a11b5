"""Issue 6's security checks, seen through ``overlay.device.Device``'s real dispatch.

Two ``Device`` objects run on the test's event loop with packet pipes standing in for their TUNs
(as in ``test_device.py``), but without a namespace: both bind UDP on the loopback of the test's
own namespace, so none of this needs root. Between them sits a ``Relay`` the test controls:
each device's peer endpoint is one of the relay's sockets, every datagram is recorded, and a
direction can hold back the datagrams a predicate picks. An attacker socket on another loopback
address (127.0.0.2) injects what the test wants; a third relay address (127.0.0.3) plays B
after it roamed.

The clock only moves when the test moves it, so a run is deterministic: timers fire only when
asked to, handshakes are spaced by moving it past the initiation flood guard, and the TAI64N
wall clock follows it.

After each injection ``Pair.settle`` waits until every socket of the pair has been drained
(``FIONREAD`` is zero: the reader callbacks ran, and a callback handles a datagram to the end),
then ``snapshot`` compares everything a packet could change: per peer the endpoint, counters,
last handshake, the Noise timestamp and flood-guard time, the pending handshake, the three key
slots with their send counters and replay windows, the cookie state, the staged packets and the
timers; per device the receiver-index table and the live ciphers.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import ipaddress
import os
import socket
import struct
import termios
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import overlay.crypto
import overlay.device
from overlay.cookie import CookieGenerator
from overlay.crypto import generate_private_key, public_key
from overlay.device import Device
from overlay.messages import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_INITIATION,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_TRANSPORT,
    MessageInitiation,
)
from overlay.timers import REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_TIMEOUT
from overlay.uapi import DeviceUpdate, Endpoint, PeerUpdate
from tests.overlay.overlaykit import PacketPipe

LOOPBACK = "127.0.0.1"
ATTACKER = "127.0.0.2"
ROAMED = "127.0.0.3"
A_ADDR, B_ADDR, C_ADDR = "10.99.0.1", "10.99.0.2", "10.99.0.3"
A_ADDR6, B_ADDR6 = "fd00:99::1", "fd00:99::2"
MAC_SIZE = 16
#: XOR masks a flipped byte gets: the lowest bit, and every bit.
MASKS = (0x01, 0xFF)


# -- plumbing ----------------------------------------------------------------------------------


class Clock:
    """A monotonic clock that stands still until the test moves it; ``wall_ns`` follows it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall_ns(self) -> int:
        return 1_700_000_000 * 10**9 + int(self.now * 1e9)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def udp_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.setblocking(False)
    return sock


def pending_bytes(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def ipv4(source: str, destination: str, payload: bytes) -> bytes:
    """An IPv4 header (checksum left zero: nothing on this path checks it) + payload."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0,
                       ipaddress.IPv4Address(source).packed,
                       ipaddress.IPv4Address(destination).packed) + payload


def ipv6(source: str, destination: str, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 17, 64,
                       ipaddress.IPv6Address(source).packed,
                       ipaddress.IPv6Address(destination).packed) + payload


def kind(datagram: bytes) -> int:
    return datagram[0] if len(datagram) >= 4 and datagram[1:4] == b"\0\0\0" else -1


def flipped(data: bytes, position: int, mask: int) -> bytes:
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)


@dataclass
class Seen:
    """One datagram the relay saw: ``direction`` is "a->b", "b->a" or "x" (to the attacker)."""

    direction: str
    data: bytes


class Relay:
    """Stands between A and B. ``to_a`` sockets are what A knows as B's endpoint (A sends there,
    the relay forwards to B from ``from_a``); ``from_a`` is what B knows as A's endpoint (B sends
    there, the relay forwards to A from ``b_source``, one of the ``to_a`` sockets)."""

    def __init__(self) -> None:
        self.from_a = udp_socket(LOOPBACK)
        self.to_a = udp_socket(LOOPBACK)
        self.roamed = udp_socket(ROAMED)
        self.attacker = udp_socket(ATTACKER)
        self.b_source = self.to_a
        self.a_port = self.b_port = 0
        self.seen: list[Seen] = []
        self.held: list[Seen] = []
        #: direction -> predicate: matching datagrams are recorded and held back, not forwarded.
        self.hold: dict[str, Callable[[bytes], bool]] = {}
        self.sockets = (self.from_a, self.to_a, self.roamed, self.attacker)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.to_a.fileno(), self._read, self.to_a, "a->b")
        loop.add_reader(self.roamed.fileno(), self._read, self.roamed, "a->b")
        loop.add_reader(self.from_a.fileno(), self._read, self.from_a, "b->a")
        loop.add_reader(self.attacker.fileno(), self._read, self.attacker, "x")

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        for sock in self.sockets:
            loop.remove_reader(sock.fileno())
            sock.close()

    def _read(self, sock: socket.socket, direction: str) -> None:
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            seen = Seen(direction, data)
            self.seen.append(seen)
            hold = self.hold.get(direction)
            if hold is not None and hold(data):
                self.held.append(seen)
            else:
                self.forward(seen)

    def forward(self, seen: Seen) -> None:
        if seen.direction == "a->b":
            self.from_a.sendto(seen.data, (LOOPBACK, self.b_port))
        elif seen.direction == "b->a":
            self.b_source.sendto(seen.data, (LOOPBACK, self.a_port))

    def release(self) -> None:
        held, self.held = self.held, []
        self.hold.clear()
        for seen in held:
            self.forward(seen)

    def count(self, direction: str, message_kind: int | None = None) -> int:
        return sum(1 for s in self.seen if s.direction == direction
                   and (message_kind is None or kind(s.data) == message_kind))

    def last(self, direction: str, message_kind: int) -> bytes:
        return [s.data for s in self.seen if s.direction == direction and kind(s.data) == message_kind][-1]


class Pair:
    """Devices A and B (and a third key C, a peer of A without endpoint, owning C_ADDR)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.tun_a, self.tun_b = PacketPipe(), PacketPipe()
        self.a = Device("a", self.tun_a, clock=self.clock, wall_clock_ns=self.clock.wall_ns)
        self.b = Device("b", self.tun_b, clock=self.clock, wall_clock_ns=self.clock.wall_ns)
        self.key_a, self.key_b, self.key_c = (generate_private_key() for _ in range(3))
        self.pub_a, self.pub_b, self.pub_c = (public_key(k) for k in (self.key_a, self.key_b, self.key_c))
        self.relay = Relay()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.a.start()
        self.b.start()
        self.relay.a_port = self.a.status().listen_port
        self.relay.b_port = self.b.status().listen_port
        self.relay.start(loop)
        self.a.apply(DeviceUpdate(private_key=self.key_a, peers=[
            PeerUpdate(self.pub_b, endpoint=self.endpoint(self.relay.to_a),
                       allowed_ips=[ipaddress.ip_network(f"{B_ADDR}/32"),
                                    ipaddress.ip_network(f"{B_ADDR6}/128")]),
            PeerUpdate(self.pub_c, allowed_ips=[ipaddress.ip_network(f"{C_ADDR}/32")]),
        ]))
        self.b.apply(DeviceUpdate(private_key=self.key_b, peers=[
            PeerUpdate(self.pub_a, endpoint=self.endpoint(self.relay.from_a),
                       allowed_ips=[ipaddress.ip_network(f"{A_ADDR}/32"),
                                    ipaddress.ip_network(f"{A_ADDR6}/128")]),
        ]))

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()
        self.relay.close(asyncio.get_running_loop())
        self.tun_a.close()
        self.tun_b.close()

    @staticmethod
    def endpoint(sock: socket.socket) -> Endpoint:
        host, port = sock.getsockname()
        return Endpoint(ipaddress.ip_address(host), port)

    def device_sockets(self) -> list[socket.socket]:
        # The device's one UDP socket is internal; settling only needs to see it drained.
        return [s for s in (getattr(self.a, "_sock", None), getattr(self.b, "_sock", None)) if s is not None]

    async def settle(self) -> None:
        """Until every socket of the pair is drained twice in a row: all sent datagrams handled."""
        quiet = 0
        for _ in range(2000):
            await asyncio.sleep(0)
            if any(pending_bytes(s) for s in (*self.device_sockets(), *self.relay.sockets)):
                quiet = 0
                await asyncio.sleep(0.0005)
            else:
                quiet += 1
                if quiet >= 3:
                    return
        raise AssertionError("the pair never went quiet")

    async def inject(self, target: str, data: bytes, source: socket.socket | None = None) -> None:
        """Send ``data`` to device ``target`` ("a" or "b"), by default from the address it knows
        its peer by, and wait until it has been handled."""
        if source is None:
            source = self.relay.to_a if target == "a" else self.relay.from_a
        source.sendto(data, (LOOPBACK, self.relay.a_port if target == "a" else self.relay.b_port))
        await self.settle()

    async def send(self, src: str, packet: bytes) -> None:
        """Write ``packet`` to ``src``'s TUN as the kernel would."""
        (self.tun_a if src == "a" else self.tun_b).outer.send(packet)
        await self.settle()

    async def a_to_b(self, payload: bytes = b"ping") -> bytes:
        packet = ipv4(A_ADDR, B_ADDR, payload)
        self.tun_a.outer.send(packet)
        assert await self.tun_b.receive() == packet
        return packet

    async def b_to_a(self, payload: bytes = b"pong") -> bytes:
        packet = ipv4(B_ADDR, A_ADDR, payload)
        self.tun_b.outer.send(packet)
        assert await self.tun_a.receive() == packet
        return packet

    async def connect(self) -> None:
        """A full handshake (A initiates) confirmed by data both ways."""
        self.clock.advance(1)
        await self.a_to_b(b"first")
        await self.b_to_a(b"confirms B's keypair")
        await self.settle()

    def peer(self, device: Device, key: bytes) -> Any:
        return device._peers[key]

    def endpoint_of(self, device: Device, key: bytes) -> Endpoint | None:
        return next(p.endpoint for p in device.status().peers if p.public_key == key)


def _keypair_state(keypair: Any) -> Any:
    if keypair is None:
        return None
    window = keypair.replay_filter
    return (keypair, keypair.send_counter, keypair.zeroed,
            getattr(window, "_greatest", None), tuple(getattr(window, "_words", ())))


def snapshot(device: Device) -> dict[str, Any]:
    """Everything about ``device`` that a datagram may change (see the module docstring)."""
    peers = {}
    for key, peer in device._peers.items():
        timers = peer.timers
        peers[key] = {
            "status": next(p for p in device.status().peers if p.public_key == key),
            "sockaddr": peer.sockaddr,
            "last_timestamp": peer.noise.last_timestamp,
            "last_initiation_consumption": peer.noise.last_initiation_consumption,
            "handshake": peer.handshake,
            "handshake_index": peer.handshake_index,
            "previous": _keypair_state(peer.keys.previous),
            "current": _keypair_state(peer.keys.current),
            "next": _keypair_state(peer.keys.next),
            "cookie": peer.cookies._cookie,
            "last_mac1": peer.cookies._last_mac1,
            "staged": list(peer.staged),
            "timers": (dict(timers._deadlines), timers._need_another_keepalive,
                       timers._handshake_attempts, timers._sent_last_minute_handshake,
                       timers._last_initiation),
        }
    return {
        "peers": peers,
        "indices": dict(device._indices._table),
        "ciphers": set(device._ciphers),
    }


def diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = []
    for key in ("indices", "ciphers"):
        if before[key] != after[key]:
            lines.append(f"{key}: {before[key]!r} -> {after[key]!r}")
    for peer, fields in before["peers"].items():
        for name, value in fields.items():
            if after["peers"][peer][name] != value:
                lines.append(f"peer {peer.hex()[:8]} {name}: {value!r} -> {after['peers'][peer][name]!r}")
    return "; ".join(lines)


class X25519Counter:
    """Stands in for ``overlay.crypto.X25519PrivateKey``: counts every scalar multiplication
    (``DH`` and ``public_key`` both start with ``from_private_bytes``)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls = 0

    def from_private_bytes(self, data: bytes) -> Any:
        self.calls += 1
        return self._real.from_private_bytes(data)

    def generate(self) -> Any:
        self.calls += 1
        return self._real.generate()


@pytest.fixture
def x25519(monkeypatch: pytest.MonkeyPatch) -> X25519Counter:
    counter = X25519Counter(overlay.crypto.X25519PrivateKey)
    monkeypatch.setattr(overlay.crypto, "X25519PrivateKey", counter)
    return counter


@pytest.fixture
async def pair() -> Any:
    harness = Pair()
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


async def assert_dropped(pair: Pair, target: str, variants: Iterator[tuple[str, bytes]],
                         source: socket.socket | None = None,
                         x25519: X25519Counter | None = None) -> int:
    """Inject each variant into ``target`` and check nothing at all happened: no state change,
    nothing on either TUN, no datagram sent by either device, no X25519 (when counted)."""
    device = pair.a if target == "a" else pair.b
    before = snapshot(device)
    other_before = snapshot(pair.b if target == "a" else pair.a)
    seen = len(pair.relay.seen)
    done = 0
    for label, data in variants:
        dh_before = x25519.calls if x25519 is not None else 0
        await pair.inject(target, data, source)
        after = snapshot(device)
        assert after == before, f"{label}: state changed: {diff(before, after)}"
        assert not pair.tun_a.drain() and not pair.tun_b.drain(), f"{label}: reached a TUN"
        assert pair.relay.seen[seen:] == [], f"{label}: answered with {pair.relay.seen[seen:]}"
        if x25519 is not None:
            assert x25519.calls == dh_before, f"{label}: {x25519.calls - dh_before} X25519 operations"
        done += 1
    assert snapshot(pair.b if target == "a" else pair.a) == other_before
    return done


def every_flip(data: bytes, positions: range | None = None) -> Iterator[tuple[str, bytes]]:
    for position in positions if positions is not None else range(len(data)):
        for mask in MASKS:
            yield f"byte {position} ^ {mask:#04x}", flipped(data, position, mask)


async def flood_with_valid_mac1(pair: Pair, target: str, count: int = 140) -> None:
    """Put ``target`` under load the way an attacker can: garbage initiations whose mac1 is
    right (it needs only the target's public key). Each costs the target one DH and no state."""
    generator = CookieGenerator(pair.pub_b if target == "b" else pair.pub_a, clock=pair.clock)
    for _ in range(count):
        body = MessageInitiation(int.from_bytes(os.urandom(4), "little"), public_key(generate_private_key()),
                                 os.urandom(48), os.urandom(28))
        wire = bytearray(body.pack())
        generator.add_macs(wire)
        pair.relay.attacker.sendto(bytes(wire), (LOOPBACK, pair.relay.b_port if target == "b"
                                                 else pair.relay.a_port))
    await pair.settle()


# -- (1) replayed transport packets ------------------------------------------------------------


async def test_replayed_transport_packet_reaches_the_tun_once(pair: Pair) -> None:
    await pair.connect()
    packets = [await pair.a_to_b(f"data {i}".encode()) for i in range(5)]
    await pair.settle()
    datagrams = [s.data for s in pair.relay.seen if s.direction == "a->b" and kind(s.data) == MESSAGE_TRANSPORT]
    assert len(datagrams) >= len(packets)
    variants = [(f"replay of transport #{i}", d) for i, d in enumerate(datagrams)]
    # From A's own address, then from an attacker's: dropped, and the endpoint stays.
    await assert_dropped(pair, "b", iter(variants))
    await assert_dropped(pair, "b", iter(variants), source=pair.relay.attacker)
    assert pair.endpoint_of(pair.b, pair.pub_a) == pair.endpoint(pair.relay.from_a)
    # The session still works, and an out-of-order (older, never seen) packet is still accepted.
    pair.relay.hold["a->b"] = lambda d: kind(d) == MESSAGE_TRANSPORT
    held_packet = ipv4(A_ADDR, B_ADDR, b"held back")
    await pair.send("a", held_packet)
    (held,) = pair.relay.held
    pair.relay.held.clear()
    pair.relay.hold.clear()
    await pair.a_to_b(b"overtakes")
    await pair.inject("b", held.data)
    assert pair.tun_b.drain() == [held_packet]
    await assert_dropped(pair, "b", iter([("replay of the reordered packet", held.data)]))


# -- (2) replayed handshake messages -----------------------------------------------------------


async def test_replayed_initiation_gets_no_response_and_changes_nothing(pair: Pair) -> None:
    await pair.connect()
    initiation = pair.relay.last("a->b", MESSAGE_INITIATION)
    response = pair.relay.last("b->a", MESSAGE_RESPONSE)
    # Past the flood guard, so only the TAI64N timestamp can refuse it.
    pair.clock.advance(1)
    await assert_dropped(pair, "b", iter([("replayed initiation", initiation)]))
    await assert_dropped(pair, "b", iter([("replayed initiation, attacker", initiation)]),
                         source=pair.relay.attacker)
    await assert_dropped(pair, "a", iter([("replayed response", response)]))
    await assert_dropped(pair, "a", iter([("replayed response, attacker", response)]),
                         source=pair.relay.attacker)
    # Also after a rekey: the old initiation is older than the newest timestamp.
    pair.clock.advance(REKEY_AFTER_TIME + 1)
    await pair.a_to_b(b"starts a rekey")
    await pair.settle()
    await pair.a_to_b(b"on the new keys")
    assert pair.relay.count("a->b", MESSAGE_INITIATION) == 2
    pair.clock.advance(1)
    for old in (initiation, pair.relay.last("a->b", MESSAGE_INITIATION)):
        await assert_dropped(pair, "b", iter([("replayed initiation after a rekey", old)]))


async def test_a_stale_initiation_held_back_loses_to_a_newer_one(pair: Pair) -> None:
    """An attacker who withheld initiation 1 and delivers it after initiation 2 succeeded
    cannot roll B back to it."""
    pair.relay.hold["a->b"] = lambda d: kind(d) == MESSAGE_INITIATION
    pair.clock.advance(1)
    await pair.send("a", ipv4(A_ADDR, B_ADDR, b"first try"))
    (first,) = pair.relay.held
    pair.relay.held.clear()
    pair.relay.hold.clear()
    pair.clock.advance(REKEY_TIMEOUT + 1)
    await pair.send("a", ipv4(A_ADDR, B_ADDR, b"second try"))  # a fresh initiation, delivered
    await pair.settle()
    assert pair.tun_b.drain() == [ipv4(A_ADDR, B_ADDR, b"first try"), ipv4(A_ADDR, B_ADDR, b"second try")]
    await assert_dropped(pair, "b", iter([("withheld older initiation", first.data)]))


# -- (3) + (4) every flipped byte of every message type ----------------------------------------


async def test_flipped_initiation_bytes_are_dropped_without_dh(pair: Pair, x25519: X25519Counter) -> None:
    pair.relay.hold["a->b"] = lambda d: kind(d) == MESSAGE_INITIATION
    pair.clock.advance(1)
    await pair.send("a", ipv4(A_ADDR, B_ADDR, b"staged"))
    (held,) = pair.relay.held
    assert len(held.data) == MESSAGE_INITIATION_SIZE
    mac2_at = MESSAGE_INITIATION_SIZE - MAC_SIZE
    # Every byte mac1 covers, and mac1 itself: refused before any DH.
    assert await assert_dropped(pair, "b", every_flip(held.data, range(mac2_at)), x25519=x25519) == 2 * mac2_at
    # mac2 is only checked under load (as in WireGuard); under load a bad mac2 gets a cookie
    # reply, nothing else.
    await flood_with_valid_mac1(pair, "b")
    before = snapshot(pair.b)
    seen = len(pair.relay.seen)
    calls = x25519.calls
    for label, data in every_flip(held.data, range(mac2_at, MESSAGE_INITIATION_SIZE)):
        await pair.inject("b", data)
        assert snapshot(pair.b) == before, f"{label}: {diff(before, snapshot(pair.b))}"
    assert x25519.calls == calls
    answers = pair.relay.seen[seen:]
    assert answers and all(kind(s.data) == MESSAGE_COOKIE_REPLY for s in answers)
    assert not pair.tun_b.drain()
    # The untouched original still completes the handshake once the load is gone.
    pair.clock.advance(2)
    calls = x25519.calls
    pair.relay.release()
    assert await pair.tun_b.receive() == ipv4(A_ADDR, B_ADDR, b"staged")
    assert x25519.calls > calls, "the X25519 counter is not hooked in"


async def test_flipped_response_bytes_are_dropped_and_the_handshake_survives(
        pair: Pair, x25519: X25519Counter) -> None:
    pair.relay.hold["b->a"] = lambda d: kind(d) == MESSAGE_RESPONSE
    pair.clock.advance(1)
    await pair.send("a", ipv4(A_ADDR, B_ADDR, b"staged"))
    (held,) = pair.relay.held
    assert len(held.data) == MESSAGE_RESPONSE_SIZE
    mac2_at = MESSAGE_RESPONSE_SIZE - MAC_SIZE
    assert pair.peer(pair.a, pair.pub_b).handshake is not None
    assert await assert_dropped(pair, "a", every_flip(held.data, range(mac2_at)), x25519=x25519) == 2 * mac2_at
    await flood_with_valid_mac1(pair, "a")
    before = snapshot(pair.a)
    for label, data in every_flip(held.data, range(mac2_at, MESSAGE_RESPONSE_SIZE)):
        await pair.inject("a", data)
        assert snapshot(pair.a) == before, f"{label}: {diff(before, snapshot(pair.a))}"
    pair.clock.advance(2)
    pair.relay.release()
    assert await pair.tun_b.receive() == ipv4(A_ADDR, B_ADDR, b"staged")
    await pair.b_to_a()


async def test_flipped_cookie_reply_bytes_are_dropped(pair: Pair) -> None:
    await flood_with_valid_mac1(pair, "b")
    pair.relay.hold["b->a"] = lambda d: kind(d) == MESSAGE_COOKIE_REPLY
    pair.clock.advance(0.5)  # still under load: the flood's second has not ended
    await pair.send("a", ipv4(A_ADDR, B_ADDR, b"staged"))
    (held,) = pair.relay.held
    assert len(held.data) == MESSAGE_COOKIE_REPLY_SIZE
    assert pair.peer(pair.a, pair.pub_b).cookies._cookie is None
    assert await assert_dropped(pair, "a", every_flip(held.data)) == 2 * MESSAGE_COOKIE_REPLY_SIZE
    # The genuine reply is accepted, once: its replay changes nothing.
    pair.relay.release()
    await pair.settle()
    assert pair.peer(pair.a, pair.pub_b).cookies._cookie is not None
    await assert_dropped(pair, "a", iter([("replayed cookie reply", held.data)]))
    # With the cookie, A's next initiation carries mac2 and gets through the loaded B.
    pair.clock.advance(REKEY_TIMEOUT + 0.1)
    await flood_with_valid_mac1(pair, "b")
    initiations = pair.relay.count("a->b", MESSAGE_INITIATION)
    await pair.send("a", ipv4(A_ADDR, B_ADDR, b"again"))
    assert pair.relay.count("a->b", MESSAGE_INITIATION) == initiations + 1
    assert pair.relay.last("a->b", MESSAGE_INITIATION)[-MAC_SIZE:] != bytes(MAC_SIZE)
    assert await pair.tun_b.receive() is not None


def with_valid_mac1(responder_public: bytes, variants: Iterator[tuple[str, bytes]],
                    clock: Clock) -> Iterator[tuple[str, bytes]]:
    """The variants with mac1 recomputed, as anyone who knows the responder's public key can;
    at most 100 per second of ``clock`` so the responder stays below its load threshold (above
    it, answering with cookie replies would be right)."""
    generator = CookieGenerator(responder_public, clock=clock)
    for n, (label, data) in enumerate(variants):
        if n and n % 100 == 0:
            clock.advance(1.1)
        wire = bytearray(data)
        generator.add_macs(wire)
        yield f"{label}, mac1 recomputed", bytes(wire)


async def test_forged_handshake_messages_with_a_valid_mac1_change_nothing(pair: Pair) -> None:
    """mac1 is no authentication: a forger recomputes it. Every byte the Noise transcript
    covers must still get the message refused, with no state change, in particular no
    pending handshake wiped by a forged response (the indices are covered by mac1 only, as in
    WireGuard, so the sender index is left out)."""
    pair.relay.hold["a->b"] = lambda d: kind(d) == MESSAGE_INITIATION
    pair.relay.hold["b->a"] = lambda d: kind(d) == MESSAGE_RESPONSE
    pair.clock.advance(1)
    await pair.send("a", ipv4(A_ADDR, B_ADDR, b"staged"))
    (initiation,) = pair.relay.held
    # Positions 8..115: ephemeral, encrypted static, encrypted timestamp.
    await assert_dropped(pair, "b", with_valid_mac1(pair.pub_b, every_flip(initiation.data, range(8, 116)),
                                                    pair.clock), source=pair.relay.attacker)
    pair.relay.release()
    pair.relay.hold["b->a"] = lambda d: kind(d) == MESSAGE_RESPONSE
    await pair.settle()
    (response,) = pair.relay.held
    assert pair.peer(pair.a, pair.pub_b).handshake is not None
    # Positions 8..59: receiver index, ephemeral, encrypted nothing.
    await assert_dropped(pair, "a", with_valid_mac1(pair.pub_a, every_flip(response.data, range(8, 60)),
                                                    pair.clock), source=pair.relay.attacker)
    pair.relay.release()
    assert await pair.tun_b.receive() == ipv4(A_ADDR, B_ADDR, b"staged")


@pytest.mark.parametrize("payload", [None, b""], ids=["keepalive", "small-ip-packet"])
async def test_flipped_short_transport_bytes_are_dropped(pair: Pair, payload: bytes | None) -> None:
    await pair.connect()
    pair.relay.hold["a->b"] = lambda d: kind(d) == MESSAGE_TRANSPORT
    if payload is None:
        peer = pair.peer(pair.a, pair.pub_b)
        pair.a._flush(peer, pair.clock(), keepalive=True)  # a keepalive on demand
        await pair.settle()
    else:
        await pair.send("a", ipv4(A_ADDR, B_ADDR, payload))
    (held,) = pair.relay.held
    assert len(held.data) == (32 if payload is None else 64)
    assert await assert_dropped(pair, "b", every_flip(held.data)) == 2 * len(held.data)
    before = pair.b.status().peers[0].rx_bytes
    pair.relay.release()
    await pair.settle()
    assert pair.b.status().peers[0].rx_bytes == before + len(held.data)
    if payload is not None:
        assert pair.tun_b.drain() == [ipv4(A_ADDR, B_ADDR, payload)]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 1499), st.integers(1, 255)), min_size=1, max_size=25),
       size=st.sampled_from([1400, 1500]))
def test_flipped_long_transport_bytes_are_dropped(flips: list[tuple[int, int]], size: int) -> None:
    async def scenario() -> None:
        pair = Pair()
        await pair.start()
        try:
            await pair.connect()
            pair.relay.hold["a->b"] = lambda d: kind(d) == MESSAGE_TRANSPORT
            packet = ipv4(A_ADDR, B_ADDR, bytes(range(256)) * 6)[:size - 32]
            packet = packet[:2] + len(packet).to_bytes(2, "big") + packet[4:]
            await pair.send("a", packet)
            (held,) = pair.relay.held
            variants = ((f"byte {p % len(held.data)} ^ {m:#04x}", flipped(held.data, p % len(held.data), m))
                        for p, m in flips)
            await assert_dropped(pair, "b", variants)
            pair.relay.release()
            assert await pair.tun_b.receive() == packet
        finally:
            await pair.close()

    asyncio.run(scenario())


# -- (4) bad mac1: no Diffie-Hellman -----------------------------------------------------------


async def test_bad_mac1_costs_no_dh(pair: Pair, x25519: X25519Counter) -> None:
    await pair.connect()
    initiation = pair.relay.last("a->b", MESSAGE_INITIATION)
    response = pair.relay.last("b->a", MESSAGE_RESPONSE)
    # A forged initiation whose mac1 is made for another responder's key.
    wrong = CookieGenerator(pair.pub_c, clock=pair.clock)
    forged = bytearray(MessageInitiation(1, public_key(generate_private_key()), os.urandom(48),
                                         os.urandom(28)).pack())
    wrong.add_macs(forged)
    zero_macs = initiation[:-2 * MAC_SIZE] + bytes(2 * MAC_SIZE)
    pair.clock.advance(1)
    calls = x25519.calls
    await assert_dropped(pair, "b", iter([("mac1 for another key", bytes(forged)),
                                          ("mac1 zeroed", zero_macs),
                                          ("random body", bytes([1, 0, 0, 0]) + os.urandom(144))]),
                         source=pair.relay.attacker, x25519=x25519)
    await assert_dropped(pair, "a", iter([("response, mac1 zeroed", response[:-32] + bytes(32)),
                                          ("random response", bytes([2, 0, 0, 0]) + os.urandom(88))]),
                         source=pair.relay.attacker, x25519=x25519)
    assert x25519.calls == calls
    # Control: a garbage initiation with a *valid* mac1 does cost B a DH (and nothing else).
    flood = CookieGenerator(pair.pub_b, clock=pair.clock)
    valid_mac1 = bytearray(forged)
    flood.add_macs(valid_mac1)
    await assert_dropped(pair, "b", iter([("valid mac1, garbage", bytes(valid_mac1))]),
                         source=pair.relay.attacker)
    assert x25519.calls > calls


# -- (5) cryptokey routing on the way in -------------------------------------------------------


@pytest.mark.parametrize("packet", [
    ipv4("10.99.0.77", A_ADDR, b"nobody's address"),
    ipv4(C_ADDR, A_ADDR, b"another peer's address"),
    ipv4("0.0.0.0", A_ADDR, b"unspecified"),
    ipv6("fd00:99::77", A_ADDR6, b"nobody's v6 address"),
    # Shorter than their length fields by more than the sender's zero padding could make up.
    ipv4(B_ADDR, A_ADDR, b"too short for its length field")[:-20],
    ipv6(B_ADDR6, A_ADDR6, b"x" * 20)[:-17],
    b"\x50" + bytes(39),  # IP version 5
], ids=["v4-outside", "v4-other-peer", "v4-unspecified", "v6-outside", "v4-truncated",
        "v6-truncated", "not-ip"])
async def test_spoofed_inner_source_is_dropped(pair: Pair, packet: bytes) -> None:
    await pair.connect()
    b_peer = pair.peer(pair.a, pair.pub_b)
    if packet[0] >> 4 in (4, 6):
        # B's TUN hands it over; B routes it to A by destination and encrypts it correctly.
        transports = pair.relay.count("b->a", MESSAGE_TRANSPORT)
        await pair.send("b", packet)
        assert pair.relay.count("b->a", MESSAGE_TRANSPORT) == transports + 1
    else:
        # Not routable by B: seal it with B's keys as a misbehaving peer would.
        keypair = pair.peer(pair.b, pair.pub_a).keys.current
        counter = keypair.next_nonce()
        sealed = pair.b._ciphers[keypair][0].encrypt(overlay.crypto.counter_nonce(counter), packet, None)
        rx = b_peer.rx_bytes
        await pair.inject("a", struct.pack("<IIQ", MESSAGE_TRANSPORT, keypair.remote_index, counter) + sealed)
        assert b_peer.rx_bytes > rx, "it did authenticate"
    assert pair.tun_a.drain() == []
    # The session is fine: B's own addresses still get through, on v4 and v6.
    await pair.b_to_a(b"legitimate")
    good6 = ipv6(B_ADDR6, A_ADDR6, b"legitimate v6")
    await pair.send("b", good6)
    assert pair.tun_a.drain() == [good6]


# -- (6) endpoint roaming ----------------------------------------------------------------------


async def test_only_authenticated_fresh_packets_move_the_endpoint(pair: Pair) -> None:
    await pair.connect()
    at_b = pair.endpoint(pair.relay.to_a)
    assert pair.endpoint_of(pair.a, pair.pub_b) == at_b
    initiation = pair.relay.last("a->b", MESSAGE_INITIATION)
    response = pair.relay.last("b->a", MESSAGE_RESPONSE)
    old_transport = pair.relay.last("b->a", MESSAGE_TRANSPORT)
    # Hold one fresh packet of B's back, for the last step.
    pair.relay.hold["b->a"] = lambda d: kind(d) == MESSAGE_TRANSPORT
    await pair.send("b", ipv4(B_ADDR, A_ADDR, b"fresh"))
    (fresh,) = pair.relay.held
    pair.relay.held.clear()
    pair.relay.hold.clear()
    pair.clock.advance(1)
    attacker = pair.relay.attacker
    valid_mac1 = bytearray(MessageInitiation(7, public_key(generate_private_key()), os.urandom(48),
                                             os.urandom(28)).pack())
    CookieGenerator(pair.pub_a, clock=pair.clock).add_macs(valid_mac1)
    await assert_dropped(pair, "a", iter([
        ("replayed transport", old_transport),
        ("flipped fresh transport", flipped(fresh.data, len(fresh.data) - 1, 1)),
        ("fresh transport, other receiver index", flipped(fresh.data, 4, 1)),
        ("replayed response", response),
        ("A's own initiation reflected back", initiation),  # mac1 is for B's key
        ("garbage initiation with valid mac1", bytes(valid_mac1)),
        ("cookie reply for A's index", struct.pack("<II", MESSAGE_COOKIE_REPLY,
                                                   pair.peer(pair.a, pair.pub_b).keys.current.local_index)
         + os.urandom(56)),
    ]), source=attacker)
    assert pair.endpoint_of(pair.a, pair.pub_b) == at_b
    # B roams for real (its packets now come from 127.0.0.3): A follows, and answers there.
    pair.relay.b_source = pair.relay.roamed
    await pair.b_to_a(b"from the new address")
    assert pair.endpoint_of(pair.a, pair.pub_b) == pair.endpoint(pair.relay.roamed)
    await pair.a_to_b(b"to the new address")
    assert pair.relay.count("x") == 0
    # A fresh authenticated packet moves it wherever it comes from (WireGuard's rule: the
    # source of the latest authenticated packet), even relayed by an on-path attacker ...
    await pair.inject("a", fresh.data, source=attacker)
    assert pair.endpoint_of(pair.a, pair.pub_b) == pair.endpoint(attacker)
    assert pair.tun_a.drain() == [ipv4(B_ADDR, A_ADDR, b"fresh")]
    # ... but only once: its replay from elsewhere does not move it back.
    await assert_dropped(pair, "a", iter([("fresh packet replayed", fresh.data)]), source=pair.relay.roamed)


async def test_a_response_from_a_new_address_moves_the_initiators_endpoint(pair: Pair) -> None:
    pair.relay.b_source = pair.relay.roamed
    await pair.connect()
    assert pair.endpoint_of(pair.a, pair.pub_b) == pair.endpoint(pair.relay.roamed)


# -- (7) nonces --------------------------------------------------------------------------------


class RecordingAEAD:
    """Stands in for ChaCha20Poly1305: records (key, nonce) of every encryption."""

    uses: ClassVar[list[tuple[bytes, bytes]]] = []
    real: ClassVar[Any] = None

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)
        self._aead = self.real(key)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        self.uses.append((self._key, bytes(nonce)))
        return self._aead.encrypt(nonce, data, associated_data)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return self._aead.decrypt(nonce, data, associated_data)


async def test_no_key_and_nonce_pair_is_ever_used_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    uses: list[tuple[bytes, bytes]] = []
    recorder = type("Recorder", (RecordingAEAD,), {"uses": uses, "real": overlay.device.ChaCha20Poly1305})
    monkeypatch.setattr(overlay.device, "ChaCha20Poly1305", recorder)
    monkeypatch.setattr(overlay.crypto, "ChaCha20Poly1305", recorder)
    pair = Pair()
    await pair.start()
    try:
        await pair.connect()
        for round_ in range(3):
            for i in range(20):
                await pair.a_to_b(f"a{round_}.{i}".encode())
                await pair.b_to_a(f"b{round_}.{i}".encode())
            # Rekey: past REKEY_AFTER_TIME the initiator's next send starts a new handshake.
            pair.clock.advance(REKEY_AFTER_TIME + 1)
            await pair.a_to_b(b"rekey")
            await pair.settle()
        # B initiates too; then both at once (the timers' rate limit lets both go).
        pair.clock.advance(REKEY_AFTER_TIME + 1)
        await pair.b_to_a(b"B rekeys")
        await pair.settle()
        pair.clock.advance(REJECT_AFTER_TIME + 1)
        pair.tun_a.outer.send(ipv4(A_ADDR, B_ADDR, b"simultaneous a"))
        pair.tun_b.outer.send(ipv4(B_ADDR, A_ADDR, b"simultaneous b"))
        await pair.settle()
        for _ in range(3):
            await pair.settle()
            pair.clock.advance(1)
        # Both staged packets arrive once the crossed handshakes settle.
        assert pair.tun_b.drain() == [ipv4(A_ADDR, B_ADDR, b"simultaneous a")]
        assert pair.tun_a.drain() == [ipv4(B_ADDR, A_ADDR, b"simultaneous b")]
        for i in range(5):
            await pair.a_to_b(f"after {i}".encode())
            await pair.b_to_a(f"after {i}".encode())
        # Timers: keepalives and retransmissions, all on keys in use.
        for device in (pair.a, pair.b):
            for peer in list(device._peers.values()):
                device._flush(peer, pair.clock(), keepalive=True)
        await pair.settle()
    finally:
        await pair.close()
    transport = [d for s in pair.relay.seen if kind(d := s.data) == MESSAGE_TRANSPORT]
    assert len(transport) >= 130
    assert pair.relay.count("a->b", MESSAGE_INITIATION) + pair.relay.count("b->a", MESSAGE_INITIATION) >= 5
    keys = {key for key, _ in uses}
    assert len(uses) > len(transport) and len(keys) > 10
    repeated = [use for use, n in collections.Counter(uses).items() if n > 1]
    assert not repeated, f"{len(repeated)} (key, nonce) pairs used more than once"
    # On the wire too: per direction, (receiver index, counter) never repeats.
    for direction in ("a->b", "b->a"):
        headers = [s.data[4:16] for s in pair.relay.seen
                   if s.direction == direction and kind(s.data) == MESSAGE_TRANSPORT]
        assert len(headers) == len(set(headers)), direction
