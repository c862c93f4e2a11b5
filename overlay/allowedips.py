"""Cryptokey routing table: which peer owns an inner IP address (WireGuard's AllowedIPs).

Outbound, the device looks up a packet's destination address to choose the peer (and so the
keys) it is sent with; inbound, it looks up the decrypted packet's source address and drops the
packet unless the answer is the peer whose keys decrypted it. Both are longest-prefix matches.

Semantics, as in wireguard-go and the Linux module:

- a prefix belongs to at most one peer: inserting a prefix that another peer holds moves it;
- host bits are masked on insert (``10.0.0.7/24`` is stored as ``10.0.0.0/24``);
- IPv4 and IPv6 are separate tables (an IPv4 address never matches an IPv6 prefix, even
  ``::/0``), and ``0.0.0.0/0`` / ``::/0`` are ordinary prefixes that match everything of their
  family;
- removing one peer's prefixes leaves every other peer's prefixes, and the routing they imply,
  unchanged.

Each family is a path-compressed binary trie (as wireguard-go's ``allowedips.go``) over the
address as an integer: a node holds a masked key and a prefix length ``cidr``; its two children
are chosen by bit ``cidr`` of the address (counting from the most significant bit). Only nodes
that carry a prefix or branch exist, so a lookup visits at most one node per stored prefix on its
path instead of one per address bit; that matters here because the lookup runs in Python for
every packet. A node without a peer always has two children: removal splices out nodes that
stop branching.

For ``wg show allowed-ips`` each peer's prefixes are also kept in insertion order. Peers are used
as dictionary keys, so they must be hashable and not ``None``; identity hashing (the default for
objects) is what is meant.

Concurrency: writers (configuration) must be serialised by the caller. Each structural change is
published by a single reference assignment after the new nodes are complete, so a lookup running
alongside a writer sees the table before or after that change.
"""

from __future__ import annotations

import ipaddress
from typing import Generic, TypeVar

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Node(Generic[T]):
    __slots__ = ("key", "cidr", "peer", "children", "parent")

    def __init__(self, key: int, cidr: int, peer: T | None) -> None:
        self.key = key
        self.cidr = cidr
        self.peer = peer
        self.children: list[_Node[T] | None] = [None, None]
        self.parent: _Node[T] | None = None


class _Trie(Generic[T]):
    """One address family: addresses are ``width``-bit integers."""

    __slots__ = ("width", "root")

    def __init__(self, width: int) -> None:
        self.width = width
        self.root: _Node[T] | None = None

    def _common_bits(self, a: int, b: int) -> int:
        return self.width - (a ^ b).bit_length()

    def _bit(self, key: int, cidr: int) -> int:
        """Bit number ``cidr`` of ``key`` counted from the most significant: the child slot."""
        return (key >> (self.width - 1 - cidr)) & 1

    def _mask(self, key: int, cidr: int) -> int:
        shift = self.width - cidr
        return (key >> shift) << shift

    def lookup(self, address: int) -> T | None:
        width = self.width
        found = None
        node = self.root
        while node is not None and (address ^ node.key) >> (width - node.cidr) == 0:
            if node.peer is not None:
                found = node.peer
            if node.cidr == width:
                break
            node = node.children[(address >> (width - 1 - node.cidr)) & 1]
        return found

    def insert(self, key: int, cidr: int, peer: T) -> tuple[_Node[T], T | None]:
        """Give ``key/cidr`` (``key`` already masked) to ``peer``; returns the node and the
        peer that held the prefix before, if any."""
        parent: _Node[T] | None = None
        node = self.root
        while node is not None and node.cidr <= cidr and self._common_bits(node.key, key) >= node.cidr:
            if node.cidr == cidr:
                previous = node.peer
                node.peer = peer
                return node, previous
            parent = node
            node = node.children[self._bit(key, node.cidr)]

        new = _Node(key, cidr, peer)
        if node is None:
            self._attach(parent, new, key)
            return new, None
        common = min(self._common_bits(node.key, key), cidr)
        if common == cidr:
            # The new prefix contains the subtree found here: it goes above it.
            new.children[self._bit(node.key, cidr)] = node
            node.parent = new
            self._attach(parent, new, key)
            return new, None
        # The prefixes diverge at bit ``common``: a peerless branch node holds both.
        branch: _Node[T] = _Node(self._mask(key, common), common, None)
        branch.children[self._bit(node.key, common)] = node
        branch.children[self._bit(key, common)] = new
        node.parent = branch
        new.parent = branch
        self._attach(parent, branch, key)
        return new, None

    def _attach(self, parent: _Node[T] | None, node: _Node[T], key: int) -> None:
        node.parent = parent
        if parent is None:
            self.root = node
        else:
            parent.children[self._bit(key, parent.cidr)] = node

    def _replace(self, old: _Node[T], new: _Node[T] | None) -> None:
        parent = old.parent
        if new is not None:
            new.parent = parent
        if parent is None:
            self.root = new
        else:
            parent.children[parent.children.index(old)] = new

    def clear_peer(self, node: _Node[T]) -> None:
        """Take the prefix at ``node`` away from its peer and drop nodes that no longer branch."""
        node.peer = None
        kids = [child for child in node.children if child is not None]
        if len(kids) == 2:
            return
        if kids:
            self._replace(node, kids[0])
            return
        parent = node.parent
        self._replace(node, None)
        if parent is not None and parent.peer is None:
            (remaining,) = [child for child in parent.children if child is not None]
            self._replace(parent, remaining)


def _network(cidr: str | Network) -> Network:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ValueError(f"not an IP prefix: {cidr!r}") from exc


class AllowedIPs(Generic[T]):
    """Longest-prefix-match table from IPv4 and IPv6 prefixes to peers."""

    def __init__(self) -> None:
        self._v4: _Trie[T] = _Trie(32)
        self._v6: _Trie[T] = _Trie(128)
        self._by_peer: dict[T, dict[Network, _Node[T]]] = {}

    def _trie(self, version: int) -> _Trie[T]:
        return self._v4 if version == 4 else self._v6

    def insert(self, cidr: str | Network, peer: T) -> None:
        """Route ``cidr`` (host bits masked) to ``peer``, taking it from any other peer."""
        if peer is None:
            raise ValueError("peer must not be None")
        network = _network(cidr)
        node, previous = self._trie(network.version).insert(
            int(network.network_address), network.prefixlen, peer
        )
        if previous is not None and previous != peer:
            self._forget(previous, network)
        self._by_peer.setdefault(peer, {}).setdefault(network, node)

    def remove(self, cidr: str | Network, peer: T) -> bool:
        """Remove ``cidr`` (host bits masked) if ``peer`` holds it; whether anything was removed."""
        network = _network(cidr)
        node = self._by_peer.get(peer, {}).get(network)
        if node is None:
            return False
        self._trie(network.version).clear_peer(node)
        self._forget(peer, network)
        return True

    def remove_by_peer(self, peer: T) -> None:
        """Remove every prefix ``peer`` holds."""
        for network, node in self._by_peer.pop(peer, {}).items():
            self._trie(network.version).clear_peer(node)

    def lookup(self, address: bytes | bytearray | memoryview | Address) -> T | None:
        """The peer owning the longest prefix containing ``address``: 4 bytes or an
        ``IPv4Address`` for IPv4, 16 bytes or an ``IPv6Address`` for IPv6."""
        if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return self._trie(address.version).lookup(int(address))
        if len(address) == 4:
            return self._v4.lookup(int.from_bytes(address, "big"))
        if len(address) == 16:
            return self._v6.lookup(int.from_bytes(address, "big"))
        raise ValueError(f"an IP address is 4 or 16 bytes, got {len(address)}")

    def entries(self, peer: T) -> list[Network]:
        """The prefixes ``peer`` holds, in the order they were given to it."""
        return list(self._by_peer.get(peer, {}))

    def _forget(self, peer: T, network: Network) -> None:
        owned = self._by_peer[peer]
        del owned[network]
        if not owned:
            del self._by_peer[peer]
