"""Gratuitous ARP: telling the hosts of a segment that an IPv4 address is now at this interface's
MAC, as MetalLB's layer-2 speaker and keepalived do when they take an address over.

``frames`` builds the two broadcast Ethernet frames (pure): an ARP request and an ARP reply,
each with the announced IP as both sender and target protocol address. Hosts differ in which
one they heed, so MetalLB sends both; Linux updates a neighbour entry it already has from
either (with ``arp_accept`` 0, its default, it creates none), counting a reply as gratuitous
only when its target hardware address is the sender's, a request whatever it is (zero, as RFC
5227's announcement). ``send`` writes them with an AF_PACKET socket (root, or CAP_NET_RAW) on
the named interface. Run as a script (``python garp.py IFNAME IP``) it does so in the network
namespace it was started in, which is how the announcer reaches a namespace it does not run in
(``ip netns exec``); for that this file imports nothing of ours.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6


def frames(mac: bytes, ip: str) -> list[bytes]:
    """The request and the reply announcing ``ip`` at ``mac``; ValueError on bad input."""
    if len(mac) != len(BROADCAST):
        raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
    address = ipaddress.IPv4Address(ip).packed
    out = []
    for op, target_mac in ((ARP_REQUEST, ZERO_MAC), (ARP_REPLY, mac)):
        arp = struct.pack("!HHBBH6s4s6s4s", ARPHRD_ETHER, ETH_P_IP, len(mac), len(address), op,
                          mac, address, target_mac, address)
        out.append(BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp)
    return out


def send(ifname: str, ip: str) -> None:
    """Announce ``ip`` on ``ifname`` (its MAC as the sender); OSError when that fails."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((ifname, ETH_P_ARP))
        mac = sock.getsockname()[4]  # (ifname, protocol, packet type, hardware type, address)
        for frame in frames(mac, ip):
            sock.send(frame)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: garp.py IFNAME IP\n")
        return 2
    try:
        send(argv[0], argv[1])
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"gratuitous ARP for {argv[1]} on {argv[0]}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
