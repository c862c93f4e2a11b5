"""The WireGuard device: the TUN interface, one UDP socket, and the protocol modules joined.

``Device(ifname, tun, clock=..., rng=...)`` implements ``uapi.DeviceConfig`` so ``wg`` configures
it through ``UapiServer``, and runs on one asyncio loop: every packet is handled to the end in
the callback that read it, so per-peer state (timers, key slots, staged packets) is only ever
touched by one thread, as the pure modules require. The file reads in the order of a packet's
life:

1. Configuration (``status``/``apply``). ``apply`` first computes the new configuration with
   ``uapi.MemoryDevice`` (the reference semantics of a set request), then binds a new UDP socket
   if the port changes (the one step that can fail: ``UapiError(EADDRINUSE)``), and only then
   reconciles the running peers with the new configuration: peers added or removed, keys,
   endpoints, keepalive intervals and allowed IPs changed. A refused request changes nothing.
   A new private key rebuilds every peer's precomputed static-static DH and drops their
   sessions, as wireguard-go does.
2. The socket: one dual-stack ``AF_INET6`` UDP socket (``IPV6_V6ONLY=0``) bound to ``[::]``
   serves IPv4 peers through v4-mapped addresses; where IPv6 is disabled an ``AF_INET`` socket
   on 0.0.0.0 takes its place. Both the socket and the TUN descriptor are read with
   ``loop.add_reader`` and drained in batches of up to ``MAX_BATCH`` reads per wake-up:
   a synchronous read costs less than a datagram protocol's callbacks, and a socket made
   without the loop can be bound inside the synchronous ``apply``. Within a batch the per-packet
   system calls are shared (measured: they, not the cipher, bound throughput at 1420 bytes):
   the socket asks for UDP GRO, so one read may hold many datagrams (``overlay.udp``); sealed
   datagrams wait in a per-peer outbox and leave at the end of the batch as UDP GSO runs; the
   decrypted packets for the TUN leave together through ``Tun.write_batch`` where the TUN has
   it, which merges TCP segments of a flow into one offload packet (``overlay.gro``); and each
   touched peer's timer deadline is rescheduled once. Outside a batch (timers, ``apply``)
   everything is sent at once, as before.
3. Outbound (TUN -> UDP): the destination address picks the peer by longest-prefix match on
   AllowedIPs. With a usable current keypair the packet is padded to a multiple of 16, sealed
   with that keypair's cached ``ChaCha20Poly1305`` under the next nonce and sent to the peer's
   endpoint; otherwise it is staged (the newest ``MAX_STAGED_PACKETS``) and a handshake is
   requested, which the timers rate-limit to one initiation per REKEY_TIMEOUT.
4. Inbound (UDP -> TUN), dispatched on the message type:

   - initiation: mac1 first (no DH before it); when under load (more than
     ``UNDER_LOAD_HANDSHAKES`` handshake messages in a second) a message without a valid mac2
     gets a cookie reply and nothing else; then ``consume_initiation``, ``create_response``
     with mac1/mac2, and the new keypair waits in the "next" slot;
   - response: mac1 (and mac2 under load), the receiver index must name our pending
     initiation, ``consume_response``, and the keypair becomes current; staged packets go out
     (a keepalive if none), which confirms the session to the responder;
   - cookie reply: handed to the ``CookieGenerator`` of the peer whose index it names;
   - transport: receiver index -> keypair, decrypt, and only after the tag verifies the replay
     window, the key-slot rotation, the endpoint (roaming follows authenticated packets only)
     and the timers; an empty payload is a keepalive, anything else must be an IP packet whose
     source address this peer's AllowedIPs cover (cryptokey routing) before it reaches the TUN.

   A packet that fails anywhere is dropped with a debug log and changes no state; no exception
   leaves a reader callback.
5. Timers: the device reports events to each peer's ``PeerTimers`` at wireguard-go's call sites;
   one task sleeps until the earliest deadline of any peer (woken early when an event arms an
   earlier one) and carries out the actions ``fire`` returns.

Counters (rx/tx bytes of datagrams, last handshake in wall-clock nanoseconds) feed ``wg show``.
Keys are never logged; peers appear in logs as wireguard-go shows them, by an abbreviated
public key.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import ipaddress
import logging
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from overlay.allowedips import AllowedIPs
from overlay.cookie import CookieChecker, CookieGenerator, source_bytes
from overlay.crypto import KEY_LEN, clamp, counter_nonce, key_to_base64
from overlay.keypairs import IndexTable, Keypair, KeySlots, NonceExhausted
from overlay.messages import (
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    MESSAGE_TRANSPORT_HEADER_SIZE,
    MessageError,
    MessageInitiation,
    MessageResponse,
    message_type,
)
from overlay.noise import (
    HandshakeError,
    HandshakeState,
    Peer,
    StaticIdentity,
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    derive_keypair,
)
from overlay.replay import ReplayFilter
from overlay.timers import Action, PeerTimers, should_initiate_on_send
from overlay.tun import Tun
from overlay.udp import GsoSender, enable_gro, receive
from overlay.uapi import DeviceStatus, DeviceUpdate, Endpoint, MemoryDevice, UapiError

log = logging.getLogger(__name__)

MAX_STAGED_PACKETS = 128  # packets held per peer while a handshake is pending (wireguard-go)
MAX_BATCH = 64  # packets read from the TUN or the socket per wake-up, before yielding
PADDING_MULTIPLE = 16  # bytes: plaintexts are zero-padded to a multiple of this
UNDER_LOAD_HANDSHAKES = 128  # handshake messages per second above which mac2 is required
UNDER_LOAD_AFTER_TIME = 1.0  # seconds the device stays under load after the last burst
SOCKET_BUFFER_SIZE = 7 * 1024 * 1024  # bytes, wireguard-go's socket buffer size
IPV4_HEADER_SIZE = 20  # bytes
IPV6_HEADER_SIZE = 40  # bytes

ZERO_KEY = bytes(KEY_LEN)
#: What a receiver index names while its handshake is unfinished (``IndexTable``'s ``H``).
INITIATION = "initiation"
RESPONSE = "response"

_TRANSPORT_HEADER = struct.Struct("<IIQ")
SockAddr = tuple[str, int] | tuple[str, int, int, int]


class DeviceRandom(Protocol):
    """The device's randomness: indices, jitter, ephemeral keys, cookie secrets and nonces.
    ``secrets.SystemRandom()`` fits."""

    def getrandbits(self, k: int, /) -> int: ...

    def randrange(self, start: int, /) -> int: ...

    def randbytes(self, n: int, /) -> bytes: ...


@dataclass(eq=False)
class PeerState:
    """One configured peer at run time; identity-hashed, so it keys AllowedIPs and the index
    table. ``sockaddr`` is ``endpoint`` in the form the socket sends to."""

    public_key: bytes
    label: str
    noise: Peer
    timers: PeerTimers
    keys: KeySlots
    cookies: CookieGenerator
    endpoint: Endpoint | None = None
    sockaddr: SockAddr | None = None
    handshake: HandshakeState | None = None
    handshake_index: int | None = None
    staged: deque[bytes] = field(default_factory=lambda: deque(maxlen=MAX_STAGED_PACKETS))
    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake_ns: int = 0


def peer_label(public_key: bytes) -> str:
    """``peer(AbCd…WxYz)``, as wireguard-go names a peer in its logs (a public key: not secret)."""
    text = key_to_base64(public_key)
    return f"peer({text[:4]}…{text[-5:-1]})"


class Device:
    """A WireGuard interface on an asyncio loop; ``start`` it, configure it with ``apply``."""

    def __init__(self, ifname: str, tun: Tun, *, clock: Callable[[], float] = time.monotonic,
                 rng: DeviceRandom | None = None,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.ifname = ifname
        self._tun = tun
        self._clock = clock
        self._wall_clock_ns = wall_clock_ns
        self._rng: DeviceRandom = rng if rng is not None else secrets.SystemRandom()
        self._config = DeviceStatus()
        self._identity: StaticIdentity | None = None
        self._checker: CookieChecker | None = None
        self._peers: dict[bytes, PeerState] = {}
        self._allowed: AllowedIPs[PeerState] = AllowedIPs()
        self._indices: IndexTable[PeerState, str] = IndexTable(rng=self._rng)
        #: (send, receive) AEADs per live keypair; dropped when the keypair retires.
        self._ciphers: dict[Keypair, tuple[ChaCha20Poly1305, ChaCha20Poly1305]] = {}
        self._sock: socket.socket | None = None
        self._gso = GsoSender()
        #: While a reader callback drains its descriptor: sealed datagrams per peer, sent
        #: together (UDP GSO) when the batch ends, and the peers whose timers may have moved.
        self._batching = False
        self._outbox: dict[PeerState, list[bytes]] = {}
        #: Decrypted packets for the TUN, written together when the batch ends (if the TUN
        #: offers ``write_batch``: it may merge TCP segments).
        self._write_batch: Callable[[list[bytes]], None] | None = getattr(tun, "write_batch", None)
        self._inbox: list[bytes] = []
        self._touched: set[PeerState] = set()
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._wake_at: float | None = None
        self._load_window_start = 0.0
        self._load_count = 0
        self._under_load_until = 0.0
        self._failed: asyncio.Future[None] | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind a UDP socket on a random port and start reading the TUN, the socket and the timers.
        Must run on the loop that will serve the device."""
        self._loop = asyncio.get_running_loop()
        self._failed = self._loop.create_future()
        self._use_socket(self._open_socket(0))
        self._loop.add_reader(self._tun.fileno(), self._on_tun_readable)
        self._timer_task = self._loop.create_task(self._run_timers(), name=f"{self.ifname} timers")
        self._timer_task.add_done_callback(self._on_timer_task_done)

    async def wait_failed(self) -> None:
        """Return when the device stopped working on its own (the TUN interface went away)."""
        assert self._failed is not None, "start() first"
        await asyncio.shield(self._failed)

    async def close(self) -> None:
        """Stop reading, close the socket and wipe every key. The TUN stays the caller's."""
        if self._loop is not None:
            self._loop.remove_reader(self._tun.fileno())
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
            self._timer_task = None
        self._close_socket()
        for peer in self._peers.values():
            self._drop_sessions(peer)
            peer.timers.stop()

    def _on_timer_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: timer task died", self.ifname, exc_info=task.exception())
            self._fail()

    def _fail(self) -> None:
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(None)

    # -- configuration (uapi.DeviceConfig) -----------------------------------------------------

    def status(self) -> DeviceStatus:
        status = copy.deepcopy(self._config)
        status.listen_port = self._port
        for entry in status.peers:
            peer = self._peers[entry.public_key]
            entry.endpoint = peer.endpoint
            entry.rx_bytes = peer.rx_bytes
            entry.tx_bytes = peer.tx_bytes
            entry.last_handshake_ns = peer.last_handshake_ns
        return status

    def apply(self, update: DeviceUpdate) -> None:
        candidate = MemoryDevice(self._config)
        candidate.apply(update)
        new = candidate.status()
        sock = None
        if self._loop is not None and update.listen_port is not None and update.listen_port != self._port:
            try:
                sock = self._open_socket(update.listen_port, new.fwmark)
            except OSError as error:
                raise UapiError(error.errno or errno.EADDRINUSE,
                                f"cannot listen on port {update.listen_port}") from None
        # Nothing below can fail on a valid configuration: from here on the update is committed.
        old = self._config
        self._config = new
        if sock is not None:
            self._use_socket(sock)
        elif new.fwmark != old.fwmark and self._sock is not None:
            self._set_fwmark(self._sock, new.fwmark)
        if new.private_key != old.private_key:
            self._set_identity(new.private_key)
        before = {entry.public_key: entry for entry in old.peers}
        wanted = {entry.public_key for entry in new.peers}
        for key in [key for key in self._peers if key not in wanted]:
            self._remove_peer(self._peers.pop(key))
        reroute: list[tuple[PeerState, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]] = []
        wake: list[PeerState] = []
        for entry in new.peers:
            peer = self._peers.get(entry.public_key)
            previous = before.get(entry.public_key)
            if peer is None:
                peer = self._peers[entry.public_key] = self._new_peer(entry.public_key)
            if previous is None or previous.preshared_key != entry.preshared_key:
                peer.noise.preshared_key = entry.preshared_key or ZERO_KEY
            if previous is None or previous.endpoint != entry.endpoint:
                self._set_endpoint(peer, entry.endpoint)
            interval = entry.persistent_keepalive_interval
            if interval != peer.timers.persistent_keepalive_interval:
                if interval and not peer.timers.persistent_keepalive_interval:
                    wake.append(peer)
                peer.timers.persistent_keepalive_interval = interval
            if previous is None or previous.allowed_ips != entry.allowed_ips:
                reroute.append((peer, entry.allowed_ips))
        for peer, _ in reroute:
            self._allowed.remove_by_peer(peer)
        for peer, prefixes in reroute:
            for prefix in prefixes:
                self._allowed.insert(prefix, peer)
        for peer in wake:
            # wireguard-go sends a keepalive at once when the interval is switched on.
            self._flush(peer, self._clock(), keepalive=True)
            self._reschedule(peer)

    def _set_identity(self, private_key: bytes | None) -> None:
        if private_key is None:
            self._identity = self._checker = None
        else:
            self._identity = StaticIdentity.from_private(private_key)
            self._checker = CookieChecker(self._identity.public, clock=self._clock,
                                          random_bytes=self._rng.randbytes)
        for peer in self._peers.values():
            self._drop_sessions(peer)
            last_timestamp = peer.noise.last_timestamp
            peer.noise = self._noise_peer(peer.public_key, peer.noise.preshared_key)
            peer.noise.last_timestamp = last_timestamp

    def _noise_peer(self, public_key: bytes, preshared_key: bytes) -> Peer:
        if self._identity is None:  # every handshake fails until a private key is set
            return Peer(public_key, preshared_key)
        return Peer.create(self._identity, public_key, preshared_key)

    def _new_peer(self, public_key: bytes) -> PeerState:
        label = peer_label(public_key)
        keys = KeySlots(on_retire=self._on_retire)
        return PeerState(
            public_key=public_key, label=label, noise=self._noise_peer(public_key, ZERO_KEY),
            timers=PeerTimers(rng=self._rng, label=label), keys=keys,
            cookies=CookieGenerator(public_key, clock=self._clock))

    def _remove_peer(self, peer: PeerState) -> None:
        self._drop_sessions(peer)
        peer.timers.stop()
        peer.staged.clear()
        self._allowed.remove_by_peer(peer)

    def _drop_sessions(self, peer: PeerState) -> None:
        """Wipe every keypair of ``peer`` and abandon its pending handshake."""
        peer.keys.clear()
        self._forget_handshake(peer)

    def _forget_handshake(self, peer: PeerState) -> None:
        if peer.handshake_index is not None:
            self._indices.delete(peer.handshake_index)
        peer.handshake = None
        peer.handshake_index = None

    def _on_retire(self, keypair: Keypair) -> None:
        self._indices.delete(keypair.local_index)
        self._ciphers.pop(keypair, None)

    # -- the socket ----------------------------------------------------------------------------

    def _open_socket(self, port: int, fwmark: int = 0) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as error:
            if error.errno != errno.EAFNOSUPPORT:
                raise
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
            else:
                sock.bind(("0.0.0.0", port))
            sock.setblocking(False)
            for option, forced in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):
                try:  # SO_RCVBUFFORCE/SO_SNDBUFFORCE pass the sysctl limits (CAP_NET_ADMIN)
                    sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER_SIZE)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
            if fwmark:
                self._set_fwmark(sock, fwmark)
            enable_gro(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _set_fwmark(sock: socket.socket, fwmark: int) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, fwmark)
        except OSError as error:
            log.warning("cannot set fwmark on the UDP socket: %s", error)

    def _use_socket(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._close_socket()
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._loop.add_reader(sock.fileno(), self._on_udp_readable)
        for peer in self._peers.values():
            self._set_endpoint(peer, peer.endpoint)
        log.info("%s: listening on UDP port %d", self.ifname, self._port)

    def _close_socket(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _set_endpoint(self, peer: PeerState, endpoint: Endpoint | None) -> None:
        peer.endpoint = endpoint
        if endpoint is None:
            peer.sockaddr = None
        elif self._sock is not None and self._sock.family == socket.AF_INET6:
            host = f"::ffff:{endpoint.address}" if endpoint.address.version == 4 else str(endpoint.address)
            peer.sockaddr = (host, endpoint.port, 0, 0)
        else:
            peer.sockaddr = (str(endpoint.address), endpoint.port)

    def _roam(self, peer: PeerState, addr: SockAddr) -> None:
        """Point ``peer`` at the source of an authenticated packet."""
        if addr != peer.sockaddr:
            endpoint = _endpoint_of(addr)
            if endpoint != peer.endpoint:
                log.debug("%s: endpoint is now %s", peer.label, endpoint)
            peer.endpoint = endpoint
            peer.sockaddr = addr

    def _send_to_peer(self, peer: PeerState, data: bytes) -> None:
        if peer.sockaddr is None or self._sock is None:
            log.debug("%s: no endpoint, packet dropped", peer.label)
            return
        try:
            self._sock.sendto(data, peer.sockaddr)
        except OSError as error:
            log.debug("%s: send failed: %s", peer.label, error)
            return
        peer.tx_bytes += len(data)

    def _queue(self, peer: PeerState, data: bytes) -> None:
        """Send a transport datagram, or hold it for ``_end_batch`` while a batch is read."""
        if not self._batching:
            self._send_to_peer(peer, data)
            return
        box = self._outbox.get(peer)
        if box is None:
            self._outbox[peer] = [data]
        else:
            box.append(data)

    def _begin_batch(self) -> None:
        self._batching = True

    def _end_batch(self) -> None:
        """Send what the batch sealed, per peer in order, and wake the timers it moved."""
        self._batching = False
        outbox, self._outbox = self._outbox, {}
        touched, self._touched = self._touched, set()
        if self._inbox:
            inbox, self._inbox = self._inbox, []
            assert self._write_batch is not None
            try:
                self._write_batch(inbox)
            except OSError as error:
                log.debug("%s: TUN write failed: %s", self.ifname, error)
        sock = self._sock
        for peer, datagrams in outbox.items():
            if peer.sockaddr is None or sock is None:
                log.debug("%s: no endpoint, %d packets dropped", peer.label, len(datagrams))
                continue
            peer.tx_bytes += self._gso.send(sock, datagrams, peer.sockaddr)
        for peer in touched:
            self._reschedule(peer)

    def _touch(self, peer: PeerState) -> None:
        """``peer``'s timers changed: reschedule now, or once at the end of the batch."""
        if self._batching:
            self._touched.add(peer)
        else:
            self._reschedule(peer)

    # -- outbound: TUN -> UDP -----------------------------------------------------------------

    def _on_tun_readable(self) -> None:
        self._begin_batch()
        try:
            self._drain_tun()
        finally:
            self._end_batch()

    def _drain_tun(self) -> None:
        read = self._tun.read
        for _ in range(MAX_BATCH):
            try:
                packet = read()
            except BlockingIOError:
                return
            except OSError as error:
                log.error("%s: TUN read failed (%s); stopping", self.ifname, error)
                assert self._loop is not None
                self._loop.remove_reader(self._tun.fileno())
                self._fail()
                return
            try:
                self._route_outbound(packet)
            except Exception:
                log.debug("%s: outbound packet dropped", self.ifname, exc_info=True)

    def _route_outbound(self, packet: bytes) -> None:
        version = packet[0] >> 4 if packet else 0
        if version == 4 and len(packet) >= IPV4_HEADER_SIZE:
            destination = packet[16:20]
        elif version == 6 and len(packet) >= IPV6_HEADER_SIZE:
            destination = packet[24:40]
        else:
            log.debug("%s: not an IP packet from the TUN, dropped", self.ifname)
            return
        peer = self._allowed.lookup(destination)
        if peer is None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: no peer for %s, dropped", self.ifname, ipaddress.ip_address(destination))
            return
        now = self._clock()
        self._send_packet(peer, packet, now)
        self._touch(peer)

    def _send_packet(self, peer: PeerState, packet: bytes, now: float) -> None:
        """Seal and send ``packet`` (empty: a keepalive), or stage it and ask for a handshake."""
        keypair = peer.keys.current_for_sending(now)
        ciphers = self._ciphers.get(keypair) if keypair is not None else None
        if keypair is None or ciphers is None:
            peer.staged.append(packet)
            self._want_handshake(peer, now)
            return
        try:
            counter = keypair.next_nonce()
        except NonceExhausted:
            peer.staged.append(packet)
            self._want_handshake(peer, now)
            return
        padding = -len(packet) % PADDING_MULTIPLE
        sealed = ciphers[0].encrypt(counter_nonce(counter), packet + bytes(padding) if padding else packet, None)
        self._queue(peer, _TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, keypair.remote_index, counter) + sealed)
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_sent(now)
        if packet:
            peer.timers.data_sent(now)
        if should_initiate_on_send(created=keypair.created, send_counter=keypair.send_counter,
                                   is_initiator=keypair.is_initiator, now=now):
            self._want_handshake(peer, now)

    def _flush(self, peer: PeerState, now: float, *, keepalive: bool) -> None:
        """Send the staged packets; with none staged and ``keepalive``, send a keepalive."""
        packets = list(peer.staged)
        peer.staged.clear()
        if not packets and keepalive:
            packets = [b""]
        for packet in packets:
            self._send_packet(peer, packet, now)

    def _want_handshake(self, peer: PeerState, now: float) -> None:
        if peer.timers.request_handshake(now):
            self._send_initiation(peer, now)

    def _send_initiation(self, peer: PeerState, now: float) -> None:
        """Start a handshake (the rate limit has been checked by the caller or the timers)."""
        if self._identity is None or peer.sockaddr is None:
            log.debug("%s: no private key or endpoint, no handshake", peer.label)
            return
        self._forget_handshake(peer)
        index = self._indices.new_index_for_handshake(peer, INITIATION)
        try:
            message, state = create_initiation(self._identity, peer.noise, index, self._wall_clock_ns() / 1e9,
                                               self._ephemeral())
        except HandshakeError as error:
            self._indices.delete(index)
            log.debug("%s: cannot initiate: %s", peer.label, error)
            return
        peer.handshake, peer.handshake_index = state, index
        wire = bytearray(message.pack())
        peer.cookies.add_macs(wire)
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_sent(now)
        peer.timers.handshake_initiated(now)
        log.debug("%s: sending handshake initiation", peer.label)
        self._send_to_peer(peer, bytes(wire))

    def _ephemeral(self) -> bytes:
        return clamp(self._rng.randbytes(KEY_LEN))

    # -- inbound: UDP -> TUN ------------------------------------------------------------------

    def _on_udp_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._begin_batch()
        try:
            self._drain_udp(sock)
        finally:
            self._end_batch()

    def _drain_udp(self, sock: socket.socket) -> None:
        for _ in range(MAX_BATCH):
            try:
                datagrams, addr = receive(sock)
            except BlockingIOError:
                return
            except OSError as error:
                log.debug("%s: UDP receive failed: %s", self.ifname, error)
                return
            for data in datagrams:
                try:
                    self._receive(data, addr)
                except Exception:
                    log.debug("%s: datagram dropped", self.ifname, exc_info=True)

    def _receive(self, data: bytes | memoryview, addr: SockAddr) -> None:
        """One datagram (a slice of a GRO read is a ``memoryview``; handshakes get bytes)."""
        try:
            kind = message_type(data)
        except MessageError as error:
            log.debug("%s: datagram dropped: %s", self.ifname, error)
            return
        now = self._clock()
        if kind == MESSAGE_TRANSPORT:
            self._receive_transport(data, addr, now)
            return
        data = bytes(data)
        if kind == MESSAGE_INITIATION:
            self._receive_initiation(data, addr, now)
        elif kind == MESSAGE_RESPONSE:
            self._receive_response(data, addr, now)
        elif kind == MESSAGE_COOKIE_REPLY:
            self._receive_cookie_reply(data)

    def _admit_handshake(self, data: bytes, sender: int, addr: SockAddr, now: float) -> bool:
        """mac1, then (under load) mac2 or a cookie reply: all before any Diffie-Hellman."""
        checker = self._checker
        if checker is None:
            log.debug("%s: handshake message dropped: no private key", self.ifname)
            return False
        if not checker.check_mac1(data):
            log.debug("%s: handshake message dropped: bad mac1", self.ifname)
            return False
        if not self._under_load(now):
            return True
        endpoint = _endpoint_of(addr)
        source = source_bytes(endpoint.address, endpoint.port)
        if checker.check_mac2(data, source):
            return True
        log.debug("%s: under load, answering %s with a cookie", self.ifname, endpoint)
        try:
            self._sock.sendto(checker.create_reply(data, sender, source), addr)  # type: ignore[union-attr]
        except OSError as error:
            log.debug("%s: cookie reply not sent: %s", self.ifname, error)
        return False

    def _under_load(self, now: float) -> bool:
        if now - self._load_window_start >= 1.0:
            self._load_window_start = now
            self._load_count = 0
        self._load_count += 1
        if self._load_count > UNDER_LOAD_HANDSHAKES:
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME
        return now < self._under_load_until

    def _receive_initiation(self, data: bytes, addr: SockAddr, now: float) -> None:
        message = MessageInitiation.unpack(data)
        if not self._admit_handshake(data, message.sender, addr, now):
            return
        assert self._identity is not None
        try:
            _, state = consume_initiation(self._identity, message, self._lookup_noise_peer,
                                          received_at=now)
        except HandshakeError as error:
            log.debug("%s: initiation dropped: %s", self.ifname, error)
            return
        peer = self._peers[state.remote_static]
        index = self._indices.new_index_for_handshake(peer, RESPONSE)
        try:
            response, done = create_response(peer.noise, state, index, self._ephemeral())
        except HandshakeError as error:
            self._indices.delete(index)
            log.debug("%s: cannot respond: %s", peer.label, error)
            return
        send_key, receive_key = derive_keypair(done, initiator=False)
        assert done.remote_index is not None
        keypair = Keypair(send_key=send_key, receive_key=receive_key, local_index=index,
                          remote_index=done.remote_index, created=now, is_initiator=False,
                          replay_filter=ReplayFilter())
        if not self._install(peer, keypair):
            return
        log.debug("%s: handshake initiation received, responding", peer.label)
        self._roam(peer, addr)
        peer.rx_bytes += len(data)
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_received(now)
        wire = bytearray(response.pack())
        peer.cookies.add_macs(wire)
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_sent(now)
        peer.timers.session_derived(now)
        self._send_to_peer(peer, bytes(wire))
        self._reschedule(peer)

    def _lookup_noise_peer(self, public_key: bytes) -> Peer | None:
        peer = self._peers.get(public_key)
        return peer.noise if peer is not None else None

    def _receive_response(self, data: bytes, addr: SockAddr, now: float) -> None:
        message = MessageResponse.unpack(data)
        if not self._admit_handshake(data, message.sender, addr, now):
            return
        entry = self._indices.lookup(message.receiver)
        if entry is None or entry.handshake != INITIATION:
            log.debug("%s: response for an unknown handshake dropped", self.ifname)
            return
        peer = entry.peer
        if peer.handshake is None or peer.handshake_index != message.receiver:
            log.debug("%s: stale response dropped", peer.label)
            return
        assert self._identity is not None
        try:
            done = consume_response(self._identity, peer.noise, peer.handshake, message)
        except HandshakeError as error:
            log.debug("%s: response dropped: %s", peer.label, error)
            return
        send_key, receive_key = derive_keypair(done, initiator=True)
        assert done.local_index is not None and done.remote_index is not None
        keypair = Keypair(send_key=send_key, receive_key=receive_key, local_index=done.local_index,
                          remote_index=done.remote_index, created=now, is_initiator=True,
                          replay_filter=ReplayFilter())
        # The index now names the keypair, not the handshake: forget it without deleting it.
        peer.handshake = None
        peer.handshake_index = None
        if not self._install(peer, keypair):
            return
        log.debug("%s: handshake complete (initiator)", peer.label)
        self._roam(peer, addr)
        peer.rx_bytes += len(data)
        peer.last_handshake_ns = self._wall_clock_ns()
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_received(now)
        peer.timers.handshake_complete(now)
        peer.timers.session_derived(now)
        self._flush(peer, now, keepalive=True)
        self._reschedule(peer)

    def _install(self, peer: PeerState, keypair: Keypair) -> bool:
        self._ciphers[keypair] = (ChaCha20Poly1305(keypair.send_key),
                                  ChaCha20Poly1305(keypair.receive_key))
        if not self._indices.swap_index_for_keypair(keypair):
            self._ciphers.pop(keypair, None)
            keypair.zero()
            return False
        peer.keys.install(keypair)
        return True

    def _receive_cookie_reply(self, data: bytes) -> None:
        receiver = int.from_bytes(data[4:8], "little")
        entry = self._indices.lookup(receiver)
        if entry is None:
            log.debug("%s: cookie reply for an unknown index dropped", self.ifname)
            return
        if entry.peer.cookies.consume_reply(data):
            log.debug("%s: cookie received", entry.peer.label)

    def _receive_transport(self, data: bytes | memoryview, addr: SockAddr, now: float) -> None:
        _, receiver, counter = _TRANSPORT_HEADER.unpack_from(data)
        entry = self._indices.lookup(receiver)
        keypair = entry.keypair if entry is not None else None
        ciphers = self._ciphers.get(keypair) if keypair is not None else None
        if entry is None or keypair is None or ciphers is None or not keypair.usable_for_receiving(now):
            log.debug("%s: transport packet for no live keypair dropped", self.ifname)
            return
        try:
            plaintext = ciphers[1].decrypt(counter_nonce(counter), data[MESSAGE_TRANSPORT_HEADER_SIZE:], None)
        except InvalidTag:
            log.debug("%s: transport packet did not authenticate", self.ifname)
            return
        if not keypair.replay_filter.validate(counter):
            log.debug("%s: replayed transport packet dropped", self.ifname)
            return
        peer = entry.peer
        self._roam(peer, addr)
        peer.rx_bytes += len(data)
        if peer.keys.received_with(keypair):
            log.debug("%s: handshake complete (responder)", peer.label)
            peer.last_handshake_ns = self._wall_clock_ns()
            peer.timers.handshake_complete(now)
            self._flush(peer, now, keepalive=False)
        if keypair is peer.keys.current and peer.timers.last_minute_handshake_due(
                created=keypair.created, is_initiator=keypair.is_initiator, now=now):
            self._want_handshake(peer, now)
        peer.timers.any_authenticated_packet_traversal(now)
        peer.timers.any_authenticated_packet_received(now)
        if plaintext:
            peer.timers.data_received(now)
            self._deliver(peer, plaintext)
        self._touch(peer)

    def _deliver(self, peer: PeerState, plaintext: bytes) -> None:
        """Write a decrypted packet to the TUN if its source address belongs to ``peer``."""
        version = plaintext[0] >> 4
        if version == 4 and len(plaintext) >= IPV4_HEADER_SIZE:
            length = int.from_bytes(plaintext[2:4], "big")
            source = plaintext[12:16]
            minimum = IPV4_HEADER_SIZE
        elif version == 6 and len(plaintext) >= IPV6_HEADER_SIZE:
            length = IPV6_HEADER_SIZE + int.from_bytes(plaintext[4:6], "big")
            source = plaintext[8:24]
            minimum = IPV6_HEADER_SIZE
        else:
            log.debug("%s: decrypted payload is not an IP packet", peer.label)
            return
        if not minimum <= length <= len(plaintext):
            log.debug("%s: decrypted packet with a bad length", peer.label)
            return
        if self._allowed.lookup(source) is not peer:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: packet from %s, not in its allowed IPs, dropped", peer.label,
                          ipaddress.ip_address(source))
            return
        packet = plaintext[:length] if length < len(plaintext) else plaintext
        if self._batching and self._write_batch is not None:
            self._inbox.append(packet)
            return
        try:
            self._tun.write(packet)
        except OSError as error:
            log.debug("%s: TUN write failed: %s", self.ifname, error)

    # -- timers --------------------------------------------------------------------------------

    def _reschedule(self, peer: PeerState) -> None:
        """Wake the timer task if ``peer`` now has a deadline earlier than the one it sleeps to."""
        deadline = peer.timers.next_deadline()
        if deadline is not None and (self._wake_at is None or deadline < self._wake_at):
            self._wake_at = deadline
            self._wakeup.set()

    async def _run_timers(self) -> None:
        while True:
            now = self._clock()
            for peer in list(self._peers.values()):
                for action in peer.timers.fire(now):
                    try:
                        self._carry_out(peer, action, now)
                    except Exception:
                        log.exception("%s: timer action %s failed", peer.label, action.value)
            deadlines = [d for peer in self._peers.values()
                         if (d := peer.timers.next_deadline()) is not None]
            self._wake_at = min(deadlines, default=None)
            self._wakeup.clear()
            timeout = None if self._wake_at is None else max(0.0, self._wake_at - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _carry_out(self, peer: PeerState, action: Action, now: float) -> None:
        if action is Action.SEND_HANDSHAKE_INITIATION:
            self._send_initiation(peer, now)
        elif action is Action.SEND_KEEPALIVE:
            self._flush(peer, now, keepalive=True)
        elif action is Action.ZERO_KEYS:
            log.debug("%s: zeroing key material", peer.label)
            self._drop_sessions(peer)
        elif action is Action.GIVE_UP:
            log.debug("%s: handshake gave up, dropping %d staged packets", peer.label, len(peer.staged))
            peer.staged.clear()


def _endpoint_of(addr: SockAddr) -> Endpoint:
    """The ``Endpoint`` a socket address stands for (v4-mapped IPv6 shown as IPv4)."""
    address = ipaddress.ip_address(addr[0].split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return Endpoint(address.ipv4_mapped, addr[1])
    return Endpoint(address, addr[1])
