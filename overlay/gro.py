"""TCP coalescing for TUN writes (generic receive offload done by the device), pure.

Each packet written to a TUN runs the kernel's IP and TCP receive path once, and at 1420-byte
packets that write is the largest cost of the receiving device. A TUN opened with
``IFF_VNET_HDR`` takes a ``virtio_net_hdr`` before each packet, and that header may announce a
TCP segmentation-offload packet: one large TCP/IP packet that stands for a train of
``gso_size``-byte segments. The kernel then runs its stack once for the whole train, as it
does for GRO on a real NIC. wireguard-go does the same (``tun/offload_linux.go``).

``coalesce(packets)`` turns a batch of decrypted packets, in order, into the list of
(header, packet) pairs to write. Consecutive IPv4 or IPv6 TCP segments of one flow are merged
when GRO would merge them: the same addresses, ports, IP fields (TOS/traffic class, TTL/hop
limit, DF), TCP header length, options and ACK number; the next sequence number follows on;
only ACK (and PSH on the last) flags; every segment has the first one's payload size except a
shorter last one; the whole stays below 64 KiB. IPv4 packets with options or fragments and
IPv6 packets with extension headers are never merged. A merged packet gets its IP length (and
IPv4 header checksum) rewritten and a TCP checksum field holding the pseudo-header sum, with
``VIRTIO_NET_HDR_F_NEEDS_CSUM``: the kernel treats the payload as checksummed, which holds,
because every segment arrived authenticated by Poly1305. Anything else is written as is behind
an all-zero header (the kernel verifies its checksums as usual).
"""

from __future__ import annotations

import struct

VIRTIO_NET_HDR_SIZE = 10  # bytes: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
MAX_COALESCED_SIZE = 65535  # bytes: the IP length field (IPv6: payload length) caps a packet
IPPROTO_TCP = 6
TCP_CHECKSUM_OFFSET = 16  # bytes into the TCP header
TCP_FLAG_ACK = 0x10
TCP_FLAG_PSH = 0x08
IPV4_HEADER_SIZE = 20  # bytes, without options
IPV6_HEADER_SIZE = 40  # bytes

PLAIN_HEADER = bytes(VIRTIO_NET_HDR_SIZE)
_VIRTIO_NET_HDR = struct.Struct("<BBHHHH")


def _checksum_fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_header_checksum(header: bytes | bytearray) -> int:
    """The IPv4 header checksum of ``header`` with its checksum field taken as zero."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header)) - int.from_bytes(header[10:12], "big")
    return ~_checksum_fold(total) & 0xFFFF


class _Flow:
    """A run of segments being merged; ``parts`` are the packet's pieces, the first whole."""

    __slots__ = ("key", "ip_header_size", "header_size", "segment_size", "next_seq", "length", "parts",
                 "closed")

    def __init__(self, key: bytes, ip_header_size: int, header_size: int, segment_size: int,
                 next_seq: int, packet: bytes) -> None:
        self.key = key
        self.ip_header_size = ip_header_size
        self.header_size = header_size
        self.segment_size = segment_size
        self.next_seq = next_seq
        self.length = len(packet)
        self.parts = [packet]
        self.closed = False


def _tcp_segment(packet: bytes) -> tuple[bytes, int, int, int, int] | None:
    """(flow key, IP header size, IP+TCP header size, sequence number, flags) of a mergeable
    TCP segment with a payload, or None."""
    version = packet[0] >> 4
    if version == 4:
        if packet[0] != 0x45 or packet[9] != IPPROTO_TCP or len(packet) < IPV4_HEADER_SIZE + 20:
            return None
        if packet[6] & 0x3F or packet[7]:  # MF or a fragment offset (DF is fine)
            return None
        if int.from_bytes(packet[2:4], "big") != len(packet):
            return None
        ip_size = IPV4_HEADER_SIZE
        # version/IHL, TOS, flags, TTL, protocol, addresses: what must match (not length/id/sum)
        ip_key = packet[0:2] + packet[6:10] + packet[12:20]
    elif version == 6:
        if packet[6] != IPPROTO_TCP or len(packet) < IPV6_HEADER_SIZE + 20:
            return None
        if int.from_bytes(packet[4:6], "big") + IPV6_HEADER_SIZE != len(packet):
            return None
        ip_size = IPV6_HEADER_SIZE
        ip_key = packet[0:4] + packet[6:8] + packet[8:40]
    else:
        return None
    tcp_size = (packet[ip_size + 12] >> 4) * 4
    header_size = ip_size + tcp_size
    if tcp_size < 20 or len(packet) <= header_size:
        return None
    flags = packet[ip_size + 13]
    if flags & ~(TCP_FLAG_ACK | TCP_FLAG_PSH) or not flags & TCP_FLAG_ACK:
        return None
    tcp = ip_size
    # ports, ACK number, data offset, window, urgent pointer and options must match
    key = (ip_key + packet[tcp:tcp + 4] + packet[tcp + 8:tcp + 13] + packet[tcp + 14:tcp + 16]
           + packet[tcp + 18:header_size])
    seq = int.from_bytes(packet[tcp + 4:tcp + 8], "big")
    return key, ip_size, header_size, seq, flags


def coalesce(packets: list[bytes]) -> list[tuple[bytes, bytes | bytearray]]:
    """(virtio_net_hdr, packet) pairs to write for ``packets``, in order, merged where allowed."""
    out: list[tuple[bytes, bytes | bytearray] | _Flow] = []
    flows: dict[bytes, _Flow] = {}
    for packet in packets:
        segment = _tcp_segment(packet) if len(packet) > IPV4_HEADER_SIZE else None
        if segment is None:
            out.append((PLAIN_HEADER, packet))
            continue
        key, ip_size, header_size, seq, flags = segment
        payload = len(packet) - header_size
        flow = flows.get(key)
        if (flow is not None and not flow.closed and seq == flow.next_seq and payload <= flow.segment_size
                and flow.length + payload <= MAX_COALESCED_SIZE):
            flow.parts.append(packet[header_size:])
            flow.length += payload
            flow.next_seq = (seq + payload) & 0xFFFFFFFF
            if payload < flow.segment_size or flags & TCP_FLAG_PSH:
                flow.closed = True
                if flags & TCP_FLAG_PSH:  # carry PSH over to the merged header
                    first = flow.parts[0]
                    merged = bytearray(first)
                    merged[ip_size + 13] |= TCP_FLAG_PSH
                    flow.parts[0] = bytes(merged)
            continue
        flow = _Flow(key, ip_size, header_size, payload, (seq + payload) & 0xFFFFFFFF, packet)
        flow.closed = bool(flags & TCP_FLAG_PSH)
        flows[key] = flow
        out.append(flow)
    return [item if isinstance(item, tuple) else _finish(item) for item in out]


def _finish(flow: _Flow) -> tuple[bytes, bytes | bytearray]:
    first = flow.parts[0]
    if len(flow.parts) == 1:
        return PLAIN_HEADER, first
    packet = bytearray(first)
    packet += b"".join(flow.parts[1:])
    ip_size = flow.ip_header_size
    length = len(packet)
    if ip_size == IPV4_HEADER_SIZE:
        packet[2:4] = length.to_bytes(2, "big")
        packet[10:12] = ipv4_header_checksum(packet[:IPV4_HEADER_SIZE]).to_bytes(2, "big")
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
        pseudo = packet[12:20]
    else:
        packet[4:6] = (length - IPV6_HEADER_SIZE).to_bytes(2, "big")
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
        pseudo = packet[8:40]
    tcp_length = length - ip_size
    total = sum(struct.unpack(f"!{len(pseudo) // 2}H", pseudo)) + IPPROTO_TCP + tcp_length
    packet[ip_size + TCP_CHECKSUM_OFFSET:ip_size + TCP_CHECKSUM_OFFSET + 2] = \
        _checksum_fold(total).to_bytes(2, "big")
    header = _VIRTIO_NET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, flow.header_size,
                                  flow.segment_size, ip_size, TCP_CHECKSUM_OFFSET)
    return header, packet
