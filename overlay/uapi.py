"""The WireGuard cross-platform userspace API (UAPI): what ``wg show``/``wg set``/``wg showconf``
speak to a userspace device over ``/var/run/wireguard/<ifname>.sock``.

The protocol (wireguard.com/xplatform, as wireguard-go and wireguard-tools implement it) is
line-based text over a stream socket. A request is ``get=1`` or ``set=1``, then ``key=value``
lines, then a blank line; the answer to a get is ``key=value`` lines, and every answer ends with
``errno=N`` and a blank line. Keys travel in lowercase hex (not base64), numbers in decimal.

The module reads top to bottom in the order of a request's life:

1. Values: ``Endpoint``, key and prefix parsers. A bad value is ``UapiError(EINVAL)``, a line
   without ``=`` is ``UapiError(EPROTO)``, as in wireguard-go. Key material never enters a log
   or an error message.
2. The pure protocol: ``parse_set`` turns the lines of a set request into one ``DeviceUpdate``
   (device fields, then one ``PeerUpdate`` per ``public_key`` section, in order) and
   ``format_get`` renders a ``DeviceStatus``. ``format_set`` and ``parse_get`` are the client
   halves; they give the round trips the tests check and let Corral drive any UAPI device.
3. The boundary: ``DeviceConfig`` is what a device implements (``status``/``apply``);
   ``MemoryDevice`` is the in-memory reference and test double.
4. The shell: ``UapiServer`` serves a ``DeviceConfig`` on the unix socket.

Where this deliberately differs from wireguard-go: wireguard-go applies a set request line by
line, so a bad line in the middle leaves the lines before it applied. Here the whole request is
read and parsed first and ``apply`` is atomic, so a request that fails changes nothing. The
error line carries the negated errno (``errno=-22``), as wireguard-go writes it and as
``wg`` expects it (it turns ``-ret`` back into ``errno`` for ``perror``); ``UapiError.errno``
holds the positive value, as Python's ``errno`` module spells it.

Section semantics follow wireguard-go: a later ``public_key`` line starts a new peer section,
device keys after the first peer are invalid, ``update_only`` means "do not create",
``remove=true`` wins over everything else in its section, ``replace_allowed_ips`` drops the
allowed IPs given earlier in the same section, and ``allowed_ip=-<prefix>`` (the incremental
removal newer wireguard-tools send) removes one prefix from that peer. A prefix belongs to one
peer at a time: giving it to another peer takes it from the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno as errnos
import ipaddress
import logging
import os
import re
import socket
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from overlay.crypto import ZERO_KEY, public_key

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: Where wireguard-tools looks for userspace devices (RUNSTATEDIR "/wireguard/").
DEFAULT_SOCKET_DIR = Path("/var/run/wireguard")
SOCKET_SUFFIX = ".sock"
#: IFNAMSIZ - 1: wg copies the name into a 16-byte buffer.
MAX_IFNAME_LEN = 15
#: Longest line the server reads (wireguard-go's bufio.Scanner stops at 64 KiB too).
MAX_LINE = 64 * 1024
#: What wireguard-go answers for a failure that is not the request's fault (IpcErrorUnknown).
ENOANO = errnos.ENOANO

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"[0-9]+")
_PREFIX_BITS = re.compile(r"0|[1-9][0-9]{0,2}")


class UapiError(Exception):
    """A request the device refuses; ``errno`` is positive (``errno.EINVAL``), the wire negates it."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(f"{message} (errno {errno})")
        self.errno = errno
        self.message = message


def _invalid(message: str) -> UapiError:
    return UapiError(errnos.EINVAL, message)


# -- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A peer's UDP address: an IP literal and a port (``wg`` resolves host names itself)."""

    address: IPAddress
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``1.2.3.4:51820`` or ``[fd00::1]:51820``, as Go's ``netip.ParseAddrPort`` takes them."""
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise _invalid(f"invalid endpoint {text!r}: want [ipv6]:port")
            try:
                address: IPAddress = ipaddress.IPv6Address(host)
            except ValueError:
                raise _invalid(f"invalid endpoint {text!r}: bad IPv6 address") from None
        else:
            host, sep, port = text.rpartition(":")
            if not sep:
                raise _invalid(f"invalid endpoint {text!r}: want host:port")
            try:
                address = ipaddress.IPv4Address(host)
            except ValueError:
                raise _invalid(f"invalid endpoint {text!r}: bad IPv4 address") from None
        return cls(address, _parse_uint(port, 0xFFFF, "endpoint port"))

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


def _parse_uint(value: str, maximum: int, what: str) -> int:
    # int() alone would take "+5", " 5", "5_0" and non-ASCII digits; Go's ParseUint does not.
    if not _DECIMAL.fullmatch(value) or int(value) > maximum:
        raise _invalid(f"invalid {what} {value!r}")
    return int(value)


def _parse_key(value: str, what: str) -> bytes:
    # bytes.fromhex would also skip whitespace; a key is exactly 64 hex digits.
    if not _HEX_KEY.fullmatch(value):
        raise _invalid(f"invalid {what}: want 64 hex digits")
    return bytes.fromhex(value)


def _parse_true(value: str, what: str) -> bool:
    if value != "true":
        raise _invalid(f"invalid {what} {value!r}: only 'true' is allowed")
    return True


def parse_prefix(text: str) -> IPNetwork:
    """``10.244.1.0/24`` or ``fd00::/64``; host bits are masked off, as the trie stores them.

    Netmask forms (``/255.255.255.0``), missing lengths and IPv6 zones are refused, as Go's
    ``netip.ParsePrefix`` refuses them."""
    host, sep, bits = text.partition("/")
    if not sep or not _PREFIX_BITS.fullmatch(bits):
        raise _invalid(f"invalid allowed_ip {text!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise _invalid(f"invalid allowed_ip {text!r}") from None
    if int(bits) > address.max_prefixlen or getattr(address, "scope_id", None):
        raise _invalid(f"invalid allowed_ip {text!r}")
    return ipaddress.ip_network((address, int(bits)), strict=False)


# -- the protocol -----------------------------------------------------------------------------


@dataclass
class PeerUpdate:
    """One ``public_key`` section of a set request. ``None``/empty means "leave as is"."""

    public_key: bytes
    remove: bool = False
    update_only: bool = False
    #: The all-zero key clears the preshared key.
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    #: Seconds; 0 turns persistent keepalive off.
    persistent_keepalive_interval: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: list[IPNetwork] = field(default_factory=list)
    remove_allowed_ips: list[IPNetwork] = field(default_factory=list)


@dataclass
class DeviceUpdate:
    """One set request: device fields, then peer sections in the order they came."""

    #: The all-zero key clears the private key.
    private_key: bytes | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: list[PeerUpdate] = field(default_factory=list)


@dataclass
class PeerStatus:
    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    #: Nanoseconds since the Unix epoch; 0 = never.
    last_handshake_ns: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive_interval: int = 0
    allowed_ips: list[IPNetwork] = field(default_factory=list)


@dataclass
class DeviceStatus:
    private_key: bytes | None = None
    #: 0 = not listening (wireguard-go then omits it).
    listen_port: int = 0
    fwmark: int = 0
    peers: list[PeerStatus] = field(default_factory=list)


def _split(line: str) -> tuple[str, str]:
    key, sep, value = line.partition("=")
    if not sep:
        raise UapiError(errnos.EPROTO, f"line without '=': {line[:40]!r}")
    return key, value


def parse_set(lines: Iterable[str]) -> DeviceUpdate:
    """The body of a set request (the lines after ``set=1``, without the blank terminator)."""
    update = DeviceUpdate()
    peer: PeerUpdate | None = None
    for line in lines:
        if not line:
            raise UapiError(errnos.EPROTO, "blank line inside a set request")
        key, value = _split(line)
        if key == "public_key":
            peer = PeerUpdate(_parse_key(value, "public_key"))
            update.peers.append(peer)
        elif peer is None:
            _set_device_field(update, key, value)
        else:
            _set_peer_field(peer, key, value)
    return update


def _set_device_field(update: DeviceUpdate, key: str, value: str) -> None:
    if key == "private_key":
        update.private_key = _parse_key(value, "private_key")
    elif key == "listen_port":
        update.listen_port = _parse_uint(value, 0xFFFF, "listen_port")
    elif key == "fwmark":
        update.fwmark = _parse_uint(value, 0xFFFFFFFF, "fwmark")
    elif key == "replace_peers":
        update.replace_peers = _parse_true(value, "replace_peers")
    else:
        raise _invalid(f"invalid device key {key[:40]!r}")


def _set_peer_field(peer: PeerUpdate, key: str, value: str) -> None:
    if key == "remove":
        peer.remove = _parse_true(value, "remove")
    elif key == "update_only":
        peer.update_only = _parse_true(value, "update_only")
    elif key == "preshared_key":
        peer.preshared_key = _parse_key(value, "preshared_key")
    elif key == "endpoint":
        peer.endpoint = Endpoint.parse(value)
    elif key == "persistent_keepalive_interval":
        peer.persistent_keepalive_interval = _parse_uint(value, 0xFFFF, key)
    elif key == "replace_allowed_ips":
        peer.replace_allowed_ips = _parse_true(value, "replace_allowed_ips")
        peer.allowed_ips.clear()
        peer.remove_allowed_ips.clear()
    elif key == "allowed_ip":
        removing = value.startswith("-")
        prefix = parse_prefix(value[1:] if removing else value)
        # The later line about the same prefix wins; different prefixes commute.
        for ops in (peer.allowed_ips, peer.remove_allowed_ips):
            if prefix in ops:
                ops.remove(prefix)
        (peer.remove_allowed_ips if removing else peer.allowed_ips).append(prefix)
    elif key == "protocol_version":
        if value != str(PROTOCOL_VERSION):
            raise _invalid(f"unsupported protocol_version {value!r}")
    else:
        raise _invalid(f"invalid peer key {key[:40]!r}")


def format_set(update: DeviceUpdate) -> list[str]:
    """The lines of a set request body for ``update`` (what ``wg set`` writes)."""
    lines: list[str] = []
    if update.private_key is not None:
        lines.append(f"private_key={update.private_key.hex()}")
    if update.listen_port is not None:
        lines.append(f"listen_port={update.listen_port}")
    if update.fwmark is not None:
        lines.append(f"fwmark={update.fwmark}")
    if update.replace_peers:
        lines.append("replace_peers=true")
    for peer in update.peers:
        lines.append(f"public_key={peer.public_key.hex()}")
        if peer.remove:
            lines.append("remove=true")
        if peer.update_only:
            lines.append("update_only=true")
        if peer.preshared_key is not None:
            lines.append(f"preshared_key={peer.preshared_key.hex()}")
        if peer.endpoint is not None:
            lines.append(f"endpoint={peer.endpoint}")
        if peer.persistent_keepalive_interval is not None:
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive_interval}")
        if peer.replace_allowed_ips:
            lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={prefix}" for prefix in peer.allowed_ips)
        lines.extend(f"allowed_ip=-{prefix}" for prefix in peer.remove_allowed_ips)
    return lines


def format_get(status: DeviceStatus) -> str:
    """The whole answer to ``get=1``, ending in ``errno=0`` and the blank line.

    As wireguard-go: private_key only when set, listen_port and fwmark only when non-zero,
    and per peer always preshared_key (zeros when none) and protocol_version=1."""
    lines: list[str] = []
    if status.private_key is not None:
        lines.append(f"private_key={status.private_key.hex()}")
    if status.listen_port:
        lines.append(f"listen_port={status.listen_port}")
    if status.fwmark:
        lines.append(f"fwmark={status.fwmark}")
    for peer in status.peers:
        seconds, nanoseconds = divmod(peer.last_handshake_ns, 1_000_000_000)
        lines += [
            f"public_key={peer.public_key.hex()}",
            f"preshared_key={(peer.preshared_key or ZERO_KEY).hex()}",
            f"protocol_version={PROTOCOL_VERSION}",
        ]
        if peer.endpoint is not None:
            lines.append(f"endpoint={peer.endpoint}")
        lines += [
            f"last_handshake_time_sec={seconds}",
            f"last_handshake_time_nsec={nanoseconds}",
            f"tx_bytes={peer.tx_bytes}",
            f"rx_bytes={peer.rx_bytes}",
            f"persistent_keepalive_interval={peer.persistent_keepalive_interval}",
        ]
        lines.extend(f"allowed_ip={prefix}" for prefix in peer.allowed_ips)
    lines.append("errno=0")
    return "\n".join(lines) + "\n\n"


def format_error(error: UapiError) -> str:
    return f"errno={-error.errno}\n\n"


def parse_get(text: str) -> DeviceStatus:
    """A get answer back into a ``DeviceStatus``; a non-zero errno raises ``UapiError``."""
    status = DeviceStatus()
    peer: PeerStatus | None = None
    seconds = nanoseconds = 0
    for line in text.split("\n"):
        if not line:
            break
        key, value = _split(line)
        if key == "errno":
            code = int(value)
            if code:
                raise UapiError(abs(code), "the device refused the get request")
            return status
        if key == "public_key":
            peer = PeerStatus(_parse_key(value, "public_key"))
            status.peers.append(peer)
            seconds = nanoseconds = 0
        elif peer is None:
            if key == "private_key":
                status.private_key = _parse_key(value, "private_key")
            elif key == "listen_port":
                status.listen_port = _parse_uint(value, 0xFFFF, key)
            elif key == "fwmark":
                status.fwmark = _parse_uint(value, 0xFFFFFFFF, key)
            else:
                raise _invalid(f"unexpected device key {key[:40]!r}")
        elif key == "preshared_key":
            psk = _parse_key(value, key)
            peer.preshared_key = None if psk == ZERO_KEY else psk
        elif key == "endpoint":
            peer.endpoint = Endpoint.parse(value)
        elif key in ("last_handshake_time_sec", "last_handshake_time_nsec"):
            number = _parse_uint(value, 2**63 - 1, key)
            if key.endswith("_sec"):
                seconds = number
            else:
                nanoseconds = number
            peer.last_handshake_ns = seconds * 1_000_000_000 + nanoseconds
        elif key in ("rx_bytes", "tx_bytes"):
            setattr(peer, key, _parse_uint(value, 2**64 - 1, key))
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive_interval = _parse_uint(value, 0xFFFF, key)
        elif key == "allowed_ip":
            peer.allowed_ips.append(parse_prefix(value))
        elif key != "protocol_version":
            raise _invalid(f"unexpected peer key {key[:40]!r}")
    raise UapiError(errnos.EPROTO, "get answer without errno line")


# -- the boundary -----------------------------------------------------------------------------


class DeviceConfig(Protocol):
    """What a WireGuard device offers the UAPI server.

    ``apply`` is atomic: it validates the whole update (and may refuse it with ``UapiError``,
    e.g. ``EADDRINUSE`` for a port it cannot bind) before it changes anything."""

    def status(self) -> DeviceStatus: ...

    def apply(self, update: DeviceUpdate) -> None: ...


class MemoryDevice:
    """A ``DeviceConfig`` that only remembers: the reference semantics of ``apply`` and the
    test double for anything that configures a device. Peers and allowed IPs keep the order
    in which they were added, so ``wg show`` lists them as they were set."""

    def __init__(self, state: DeviceStatus | None = None) -> None:
        self._state = copy.deepcopy(state) if state is not None else DeviceStatus()

    def status(self) -> DeviceStatus:
        return copy.deepcopy(self._state)

    def apply(self, update: DeviceUpdate) -> None:
        # Work on a copy and swap it in at the end: a failure anywhere leaves no trace.
        state = copy.deepcopy(self._state)
        peers = {peer.public_key: peer for peer in state.peers}
        if update.replace_peers:
            peers.clear()
        if update.private_key is not None:
            state.private_key = None if update.private_key == ZERO_KEY else update.private_key
            if state.private_key is not None:
                # A device is never its own peer (wireguard-go drops such a peer).
                peers.pop(public_key(state.private_key), None)
        if update.listen_port is not None:
            state.listen_port = update.listen_port
        if update.fwmark is not None:
            state.fwmark = update.fwmark
        own_key = public_key(state.private_key) if state.private_key is not None else None
        for change in update.peers:
            if change.public_key == own_key:
                continue
            if change.remove:
                peers.pop(change.public_key, None)
                continue
            peer = peers.get(change.public_key)
            if peer is None:
                if change.update_only:
                    continue
                peer = peers[change.public_key] = PeerStatus(change.public_key)
            _apply_peer(peer, change, peers.values())
        state.peers = list(peers.values())
        self._state = state


def _apply_peer(peer: PeerStatus, change: PeerUpdate, all_peers: Iterable[PeerStatus]) -> None:
    if change.preshared_key is not None:
        peer.preshared_key = None if change.preshared_key == ZERO_KEY else change.preshared_key
    if change.endpoint is not None:
        peer.endpoint = change.endpoint
    if change.persistent_keepalive_interval is not None:
        peer.persistent_keepalive_interval = change.persistent_keepalive_interval
    if change.replace_allowed_ips:
        peer.allowed_ips.clear()
    for prefix in change.remove_allowed_ips:
        if prefix in peer.allowed_ips:
            peer.allowed_ips.remove(prefix)
    for prefix in change.allowed_ips:
        for other in all_peers:
            if other is not peer and prefix in other.allowed_ips:
                other.allowed_ips.remove(prefix)
        if prefix not in peer.allowed_ips:
            peer.allowed_ips.append(prefix)


def handle_get(device: DeviceConfig) -> str:
    """The answer to a get request; a device failure becomes an errno line, not a crash."""
    try:
        return format_get(device.status())
    except UapiError as error:
        log.warning("UAPI get failed: %s", error.message)
        return format_error(error)
    except Exception:
        log.exception("UAPI get failed unexpectedly")
        return format_error(UapiError(ENOANO, "unexpected failure"))


def handle_set(device: DeviceConfig, lines: Iterable[str]) -> str:
    """Parse the whole request, then apply it; any failure answers errno and changes nothing."""
    try:
        device.apply(parse_set(lines))
    except UapiError as error:
        log.warning("UAPI set refused: %s", error.message)
        return format_error(error)
    except Exception:
        log.exception("UAPI set failed unexpectedly")
        return format_error(UapiError(ENOANO, "unexpected failure"))
    return "errno=0\n\n"


# -- the shell --------------------------------------------------------------------------------


class UapiServer:
    """Serves ``device`` on ``<socket_dir>/<ifname>.sock`` the way wireguard-go does.

    The socket is bound under a temporary name, made 0600 and renamed into place, so it is
    never reachable with looser permissions and the umask (process-wide, racy under threads)
    is left alone. A socket file left by a crashed process (connect refused) is replaced; a
    live one means another device owns the name, and ``start`` raises ``FileExistsError``.
    ``close`` removes the socket only if it is still ours.

    Each connection may carry several requests in sequence; ``wg`` sends one and closes.
    A request is read whole before it is parsed, so a refused one leaves the connection in step.
    """

    def __init__(self, ifname: str, device: DeviceConfig, *,
                 socket_dir: Path = DEFAULT_SOCKET_DIR) -> None:
        if not ifname or len(ifname) > MAX_IFNAME_LEN or "/" in ifname or ifname in (".", ".."):
            raise ValueError(f"invalid interface name {ifname!r}")
        self.ifname = ifname
        self.device = device
        self.socket_dir = socket_dir
        self.path = socket_dir / f"{ifname}{SOCKET_SUFFIX}"
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        #: Open connections: closed, and their handlers awaited, by ``close``.
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def __aenter__(self) -> UapiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        if not self.socket_dir.is_dir():
            self.socket_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            os.chmod(self.socket_dir, 0o755)
        self._check_not_in_use()
        temporary = self.socket_dir / f".{self.ifname}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(temporary))
            os.chmod(temporary, 0o600)
            sock.listen()
            os.rename(temporary, self.path)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise
        info = os.stat(self.path)
        self._inode = (info.st_dev, info.st_ino)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)
        log.info("UAPI for %s listening on %s", self.ifname, self.path)

    def _check_not_in_use(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise FileExistsError(f"{self.path} exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.path))
            except (ConnectionRefusedError, FileNotFoundError):
                log.info("replacing stale UAPI socket %s", self.path)
                return
            except OSError as error:
                raise FileExistsError(f"{self.path} is in use ({error})") from error
        raise FileExistsError(f"{self.path} is in use by another process")

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        handlers = list(self._connections.values())
        for writer in list(self._connections):
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._inode:
            self.path.unlink()
        log.info("UAPI for %s closed", self.ifname)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[writer] = task
        try:
            while (answer := await self._answer_one(reader)) is not None:
                writer.write(answer.encode())
                await writer.drain()
        except (ConnectionError, ValueError) as error:
            # ValueError: a line longer than MAX_LINE (StreamReader.readline).
            log.warning("UAPI connection for %s dropped: %s", self.ifname, error)
        finally:
            self._connections.pop(writer, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer_one(self, reader: asyncio.StreamReader) -> str | None:
        """Read one request and answer it; ``None`` ends the connection."""
        operation = await reader.readline()
        if operation == b"get=1\n":
            terminator = await reader.readline()
            if not terminator:
                return None
            if terminator != b"\n":
                return format_error(_invalid("trailing data after get=1"))
            return handle_get(self.device)
        if operation == b"set=1\n":
            return handle_set(self.device, await _read_body(reader))
        if operation:
            log.warning("UAPI for %s: unknown operation %r", self.ifname, operation[:20])
        return None


async def _read_body(reader: asyncio.StreamReader) -> list[str]:
    """The lines up to the blank line, or to end of input (wireguard-go applies that too)."""
    lines: list[str] = []
    while (raw := await reader.readline()) not in (b"", b"\n"):
        lines.append(raw.removesuffix(b"\n").decode("utf-8", errors="replace"))
    return lines


def serving_pid(ifname: str, socket_dir: Path = DEFAULT_SOCKET_DIR) -> int | None:
    """The pid of the process serving ``ifname``'s UAPI socket (its peer credentials), or None
    when nobody answers there: how tools tell a live interface from a stale socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(str(socket_dir / f"{ifname}.sock"))
        except OSError:
            return None
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    pid: int = struct.unpack("3i", credentials)[0]
    return pid
