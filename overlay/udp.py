"""Batched UDP I/O for the device: several WireGuard datagrams per system call.

At 1420-byte packets the device's cost is per packet, and a good part of it is one
``sendto``/``recvfrom`` per datagram (see ``../shared/reference/wireguard.md``). Linux offers
two socket features that move whole trains of equal-sized datagrams through the stack at once:

1. Send, UDP GSO (``UDP_SEGMENT`` as a control message, Linux >= 4.18): one ``sendmsg`` carries
   up to ``MAX_GSO_SEGMENTS`` datagrams to one address, all ``segment_size`` bytes long except a
   shorter last one; the kernel (or the NIC) cuts them apart as late as possible, or not at all
   when the receiver asked for GRO. ``GsoSender.send`` groups the datagrams queued for one
   endpoint into such runs, in order. A segment must fit the route's MTU unfragmented
   (``EINVAL``/``EMSGSIZE`` otherwise): datagrams of that size and larger are then sent one per
   ``sendto`` (and fragmented by IP, as before). Any other refusal of a segmented send (no
   checksum offload on the route, an old kernel) turns segmentation off for good.
2. Receive, UDP GRO (the ``UDP_GRO`` socket option, Linux >= 5.0): ``recvmsg`` may return
   several datagrams from one source glued together, with their size in a ``UDP_GRO`` control
   message; ``receive`` cuts them apart again (``memoryview`` slices, no copies). A
   datagram-sized read without the control message is one datagram, as before.

Both keep every datagram a whole WireGuard message, so nothing above this module changes: the
device still decrypts, checks and counts datagram by datagram.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103  # <linux/udp.h>: send-side segment size (u16 control message)
UDP_GRO = 104  # <linux/udp.h>: receive coalesced datagrams; cmsg carries the segment size (int)
MAX_GSO_SEGMENTS = 64  # UDP_MAX_SEGMENTS of older kernels (newer ones allow 128)
MAX_GSO_BYTES = 65000  # bytes of payload per segmented send (an IP packet's 64 KiB minus headers)
MAX_DATAGRAM_SIZE = 65535  # bytes: a read may return up to this much (coalesced) payload

_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_SEGMENT_SIZE = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
#: errno values with which a kernel or route refuses UDP_SEGMENT; anything else is per packet.
_GSO_UNSUPPORTED = {errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
_GSO_TOO_BIG = {errno.EINVAL, errno.EMSGSIZE}

SockAddr = tuple[str, int] | tuple[str, int, int, int]


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced datagrams on ``sock``; False where the kernel lacks UDP_GRO."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def receive(sock: socket.socket) -> tuple[list[memoryview] | list[bytes], SockAddr]:
    """One read: the datagrams it holds (one unless GRO coalesced several) and their source.
    Raises ``BlockingIOError`` when nothing is waiting."""
    data, ancillary, _, addr = sock.recvmsg(MAX_DATAGRAM_SIZE, _GRO_CMSG_SPACE)
    size = 0
    for level, kind, value in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= _GRO_SIZE.size:
            size = _GRO_SIZE.unpack_from(value)[0]
    if size <= 0 or len(data) <= size:
        return [data], addr
    view = memoryview(data)
    return [view[start:start + size] for start in range(0, len(data), size)], addr


class GsoSender:
    """Sends runs of datagrams to one address with as few system calls as the kernel allows."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        #: Datagrams of this size or larger go one per call (the route refused them as segments).
        self.too_big = MAX_DATAGRAM_SIZE + 1

    def send(self, sock: socket.socket, datagrams: list[bytes], addr: SockAddr) -> int:
        """Send ``datagrams`` to ``addr`` in order; returns the bytes sent. A datagram the
        kernel refuses (a full buffer, an unreachable address) is dropped with a debug log, as a
        lost packet; the rest still go."""
        sent = 0
        count = len(datagrams)
        start = 0
        while start < count:
            size = len(datagrams[start])
            end = start + 1
            total = size
            if self.enabled and size < self.too_big:
                limit = min(count, start + MAX_GSO_SEGMENTS)
                while end < limit and total + size <= MAX_GSO_BYTES:
                    length = len(datagrams[end])
                    if length > size:
                        break
                    end += 1
                    total += length
                    if length < size:  # a shorter datagram may only close a run
                        break
            if end - start > 1:
                try:
                    sock.sendmsg(datagrams[start:end], [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))],
                                 0, addr)
                except OSError as error:
                    if error.errno in _GSO_TOO_BIG:
                        log.debug("no UDP GSO for %d-byte datagrams: %s", size, error)
                        self.too_big = size
                    elif error.errno in _GSO_UNSUPPORTED:
                        log.info("UDP GSO refused (%s); one datagram per call from now on", error)
                        self.enabled = False
                    else:
                        log.debug("segmented send of %d datagrams failed: %s", end - start, error)
                        start = end
                    continue  # the same run again, one by one (unless it was dropped)
                sent += total
                start = end
                continue
            try:
                sock.sendto(datagrams[start], addr)
            except OSError as error:
                log.debug("send failed: %s", error)
            else:
                sent += size
            start = end
        return sent
