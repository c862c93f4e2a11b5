"""A Linux TUN interface as a file descriptor of IP packets (the overlay's inner side).

``TunDevice.create(name)`` opens ``/dev/net/tun`` and attaches it to a layer-3 interface with
``TUNSETIFF`` and ``IFF_TUN | IFF_NO_PI``: each ``read`` returns one whole IPv4 or IPv6 packet
and each ``write`` injects one, with no 4-byte packet-information header in front (the version
nibble of the packet says which family it is). The descriptor is non-blocking so the device
loop can register it with ``loop.add_reader`` and drain it until ``BlockingIOError``; a read
or write that would block is the caller's to handle (the device drops the packet).

The interface is not persistent: it exists while the descriptor is open and disappears when
``close`` runs or the process dies, which is how wireguard-go's interfaces behave and what makes
cleanup after a crash automatic. The descriptor keeps working when the interface is moved into
another network namespace (``ip link set NAME netns NS``); the name may then be taken again
in the original namespace.

``set_mtu`` sets the interface MTU with ``SIOCSIFMTU``, as wireguard-go sets 1420 when it
creates an interface; it acts on the interface in the caller's current network namespace, so
call it before the interface is moved.

With ``vnet_hdr=True`` the interface is opened with ``IFF_VNET_HDR`` as well: every packet
crosses the descriptor behind a 10-byte ``virtio_net_hdr``. ``read`` and ``write`` hide it (no
offloads are switched on, so what the kernel hands us is always one plain packet), and
``write_batch`` uses it to hand the kernel consecutive TCP segments of one flow as a single
segmentation-offload packet (``overlay.gro``): one trip through the kernel's TCP receive path
for a whole train of segments, the largest cost of a receiving device at 1420-byte packets.

``Tun`` is what the device needs of a TUN interface; ``TunDevice`` is the real one. A ``Tun``
may also offer ``write_batch(packets)``; the device uses it when present.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from typing import Protocol

from overlay.gro import PLAIN_HEADER, VIRTIO_NET_HDR_SIZE, coalesce

TUN_CLONE_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
SIOCSIFMTU = 0x8922
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFNAMSIZ = 16  # bytes, including the terminating NUL
#: wireguard-go's default: a 1500-byte underlay minus 80 bytes of IPv6 + UDP + WireGuard.
DEFAULT_MTU = 1420  # bytes
#: Largest packet a read can return (the TUN MTU may be raised up to 64 KiB).
MAX_PACKET_SIZE = 65535  # bytes

_IFREQ_FLAGS = struct.Struct(f"{IFNAMSIZ}sH")
_IFREQ_MTU = struct.Struct(f"{IFNAMSIZ}si")


class Tun(Protocol):
    """A source and sink of IP packets with a pollable descriptor."""

    name: str

    def fileno(self) -> int: ...

    def read(self) -> bytes: ...

    def write(self, packet: bytes) -> None: ...

    def close(self) -> None: ...


class TunDevice:
    """An open Linux TUN interface (``IFF_TUN | IFF_NO_PI``, non-blocking)."""

    def __init__(self, fd: int, name: str, *, vnet_hdr: bool = False) -> None:
        self._fd = fd
        self.name = name
        self.vnet_hdr = vnet_hdr

    @classmethod
    def create(cls, name: str, *, vnet_hdr: bool = False) -> TunDevice:
        """Create (or attach to) TUN interface ``name``; raises ``OSError`` (e.g. EPERM, EBUSY).
        ``vnet_hdr``: exchange packets behind a ``virtio_net_hdr`` (for ``write_batch``)."""
        encoded = name.encode()
        if not encoded or len(encoded) >= IFNAMSIZ or b"/" in encoded:
            raise ValueError(f"invalid interface name {name!r}")
        fd = os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
            answer = fcntl.ioctl(fd, TUNSETIFF, _IFREQ_FLAGS.pack(encoded, flags))
        except BaseException:
            os.close(fd)
            raise
        actual = _IFREQ_FLAGS.unpack(answer[: _IFREQ_FLAGS.size])[0].rstrip(b"\0").decode()
        return cls(fd, actual, vnet_hdr=vnet_hdr)

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes:
        """One packet; raises ``BlockingIOError`` when none is waiting."""
        if self.vnet_hdr:
            return os.read(self._fd, VIRTIO_NET_HDR_SIZE + MAX_PACKET_SIZE)[VIRTIO_NET_HDR_SIZE:]
        return os.read(self._fd, MAX_PACKET_SIZE)

    def write(self, packet: bytes) -> None:
        """Inject one packet; raises ``BlockingIOError`` when the interface queue is full."""
        if self.vnet_hdr:
            os.writev(self._fd, (PLAIN_HEADER, packet))
        else:
            os.write(self._fd, packet)

    def write_batch(self, packets: list[bytes]) -> None:
        """Inject ``packets`` in order, TCP segments of a flow merged where the kernel allows
        (with ``vnet_hdr``). A write that fails drops that packet and the rest still go; the
        last error is raised at the end."""
        failure: OSError | None = None
        if not self.vnet_hdr:
            for packet in packets:
                try:
                    os.write(self._fd, packet)
                except OSError as error:
                    failure = error
        else:
            for header, packet in coalesce(packets):
                try:
                    os.writev(self._fd, (header, packet))
                except OSError as error:
                    failure = error
        if failure is not None:
            raise failure

    def set_mtu(self, mtu: int) -> None:
        """Set the interface MTU (in the caller's network namespace)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCSIFMTU, _IFREQ_MTU.pack(self.name.encode(), mtu))

    def close(self) -> None:
        """Close the descriptor, which removes the interface; idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
