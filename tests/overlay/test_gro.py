"""overlay.gro: which decrypted packets are merged into one TUN write, and what the kernel gets.

A merged packet must equal, re-cut at ``gso_size``, the segments it was made of (with the
header fields the kernel recomputes: lengths, IPv4 checksum, TCP checksum), so the tests cut
it apart again the way the kernel's GSO does and compare."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from overlay.gro import (
    PLAIN_HEADER,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    coalesce,
    ipv4_header_checksum,
)

ACK, PSH, SYN, FIN = 0x10, 0x08, 0x02, 0x01


def tcp(seq: int, payload: bytes, *, flags: int = ACK, ack: int = 7, options: bytes = b"",
        sport: int = 5201, v6: bool = False, tos: int = 0) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, 40000, seq, ack, (5 + len(options) // 4) << 4, flags,
                         500, 0, 0) + options
    body = header + payload
    if v6:
        return struct.pack("!IHBB16s16s", 6 << 28, len(body), 6, 64,
                           ipaddress.IPv6Address("fd00::1").packed, ipaddress.IPv6Address("fd00::2").packed) + body
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(body), 1, 0x4000, 64, 6, 0,
                               bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2])))
    ip[10:12] = ipv4_header_checksum(ip).to_bytes(2, "big")
    return bytes(ip) + body


def pseudo_sum(packet: bytes) -> int:
    ip = 20 if packet[0] >> 4 == 4 else 40
    pseudo = packet[12:20] if ip == 20 else packet[8:40]
    total = sum(struct.unpack(f"!{len(pseudo) // 2}H", pseudo)) + 6 + len(packet) - ip
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_one_flow_in_order_becomes_one_tso_packet() -> None:
    segments = [tcp(1000 + 100 * i, bytes([i]) * 100) for i in range(5)] + [tcp(1500, b"z" * 40, flags=ACK | PSH)]
    ((header, merged),) = coalesce(segments)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack("<BBHHHH", header)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 40, 100, 20, 16)
    assert len(merged) == 40 + 540
    assert int.from_bytes(merged[2:4], "big") == len(merged)
    assert ipv4_header_checksum(merged[:20]) == int.from_bytes(merged[10:12], "big")
    assert merged[33] == ACK | PSH  # PSH of the last segment carried over
    assert int.from_bytes(merged[36:38], "big") == pseudo_sum(bytes(merged))
    assert bytes(merged[40:]) == b"".join(s[40:] for s in segments)
    assert merged[4:10] == segments[0][4:10] and merged[20:36] == segments[0][20:36][:13] + bytes([ACK | PSH]) + segments[0][34:36]


def test_ipv6_flow_is_merged_too() -> None:
    segments = [tcp(1 + 50 * i, b"x" * 50, v6=True) for i in range(3)]
    ((header, merged),) = coalesce(segments)
    assert header[1] == VIRTIO_NET_HDR_GSO_TCPV6
    assert int.from_bytes(merged[4:6], "big") == len(merged) - 40 == 20 + 150
    assert int.from_bytes(merged[56:58], "big") == pseudo_sum(bytes(merged))


@pytest.mark.parametrize("second, why", [
    (tcp(1200, b"b" * 100), "a gap in the sequence"),
    (tcp(1100, b"b" * 101), "a longer segment than the first"),
    (tcp(1100, b"b" * 100, flags=ACK | FIN), "FIN"),
    (tcp(1100, b"b" * 100, ack=8), "another ACK number"),
    (tcp(1100, b"b" * 100, sport=5202), "another flow"),
    (tcp(1100, b"b" * 100, tos=4), "another TOS"),
    (tcp(1100, b"b" * 100, options=b"\x01\x01\x01\x01"), "other options"),
    (tcp(1100, b""), "a bare ACK"),
    (tcp(1100, b"b" * 100, v6=True), "another family"),
])
def test_segments_that_gro_would_not_merge_are_written_as_they_are(second: bytes, why: str) -> None:
    first = tcp(1000, b"a" * 100)
    assert coalesce([first, second]) == [(PLAIN_HEADER, first), (PLAIN_HEADER, second)], why


def test_a_short_or_pushed_segment_ends_the_run_and_others_keep_their_order() -> None:
    udp = bytes([0x45]) + bytes(19)  # not TCP: passed through
    packets = [tcp(0, b"a" * 100), udp, tcp(100, b"b" * 60), tcp(160, b"c" * 100),
               tcp(260, b"d" * 100, flags=ACK | PSH), tcp(360, b"e" * 100)]
    out = coalesce(packets)
    assert [h[1] for h, _ in out] == [VIRTIO_NET_HDR_GSO_TCPV4, 0, VIRTIO_NET_HDR_GSO_TCPV4, 0]
    assert bytes(out[0][1][40:]) == b"a" * 100 + b"b" * 60
    assert out[1][1] == udp
    assert bytes(out[2][1][40:]) == b"c" * 100 + b"d" * 100
    assert out[3][1] == packets[5]


def test_merged_packets_stay_below_64_kib() -> None:
    segments = [tcp(1380 * i, b"p" * 1380) for i in range(60)]
    out = coalesce(segments)
    assert len(out) == 2
    assert all(len(packet) <= 65535 for _, packet in out)
    assert sum(len(p) - 40 for _, p in out) == 60 * 1380
