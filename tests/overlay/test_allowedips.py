"""overlay.allowedips: longest-prefix match per family, ownership moves, removal, and a
hypothesis comparison with a brute-force table (every prefix checked on every lookup)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.allowedips import AllowedIPs

A, B, C = "peer-a", "peer-b", "peer-c"


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def nets(*texts: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(t) for t in texts]


@pytest.fixture
def table() -> AllowedIPs[str]:
    return AllowedIPs()


def test_empty_table_matches_nothing(table: AllowedIPs[str]) -> None:
    assert table.lookup(ip("10.0.0.1")) is None
    assert table.lookup(ip("::1")) is None
    assert table.entries(A) == []


# Data-driven: (inserts, address, expected peer).
LPM_CASES = [
    ([("10.0.0.0/8", A), ("10.1.0.0/16", B), ("10.1.2.0/24", C)], "10.1.2.3", C),
    ([("10.0.0.0/8", A), ("10.1.0.0/16", B), ("10.1.2.0/24", C)], "10.1.3.3", B),
    ([("10.0.0.0/8", A), ("10.1.0.0/16", B), ("10.1.2.0/24", C)], "10.2.0.1", A),
    ([("10.0.0.0/8", A), ("10.1.0.0/16", B), ("10.1.2.0/24", C)], "11.0.0.1", None),
    ([("10.1.2.0/24", C), ("10.1.0.0/16", B), ("10.0.0.0/8", A)], "10.1.2.3", C),  # order-free
    ([("0.0.0.0/0", A), ("10.244.1.0/24", B)], "8.8.8.8", A),
    ([("0.0.0.0/0", A), ("10.244.1.0/24", B)], "10.244.1.200", B),
    ([("10.0.0.1/32", A), ("10.0.0.0/31", B)], "10.0.0.1", A),
    ([("10.0.0.1/32", A), ("10.0.0.0/31", B)], "10.0.0.0", B),
    ([("10.0.0.1/32", A)], "10.0.0.2", None),
    ([("128.0.0.0/1", A), ("0.0.0.0/1", B)], "200.1.1.1", A),
    ([("128.0.0.0/1", A), ("0.0.0.0/1", B)], "100.1.1.1", B),
    ([("255.255.255.255/32", A)], "255.255.255.255", A),
    ([("fd00::/8", A), ("fd00:1::/32", B), ("fd00:1::1/128", C)], "fd00:1::1", C),
    ([("fd00::/8", A), ("fd00:1::/32", B), ("fd00:1::1/128", C)], "fd00:1::2", B),
    ([("fd00::/8", A), ("fd00:1::/32", B), ("fd00:1::1/128", C)], "fd01::1", A),
    ([("fd00::/8", A), ("fd00:1::/32", B), ("fd00:1::1/128", C)], "fe00::1", None),
    ([("::/0", A), ("2001:db8::/32", B)], "2001:db8::1", B),
    ([("::/0", A), ("2001:db8::/32", B)], "2001:db9::1", A),
    ([("2001:db8::/64", A), ("2001:db8:0:0:8000::/65", B)], "2001:db8::8000:0:0:1", B),
    ([("2001:db8::/64", A), ("2001:db8:0:0:8000::/65", B)], "2001:db8::7fff:0:0:1", A),
    # Families are separate: a v4 default route never answers v6 and vice versa.
    ([("0.0.0.0/0", A)], "::1", None),
    ([("::/0", A)], "10.0.0.1", None),
    ([("::ffff:0:0/96", A)], "10.0.0.1", None),
    ([("10.0.0.0/8", A), ("::/0", B)], "10.0.0.1", A),
]


@pytest.mark.parametrize("inserts, address, expected", LPM_CASES)
def test_longest_prefix_wins(inserts: list[tuple[str, str]], address: str, expected: str | None) -> None:
    table: AllowedIPs[str] = AllowedIPs()
    for cidr, peer in inserts:
        table.insert(cidr, peer)
    assert table.lookup(ip(address)) == expected
    assert table.lookup(ipaddress.ip_address(address)) == expected
    assert table.lookup(bytearray(ip(address))) == expected
    assert table.lookup(memoryview(ip(address))) == expected


def test_host_bits_are_masked(table: AllowedIPs[str]) -> None:
    table.insert("10.1.2.3/16", A)
    table.insert("fd00::1234/64", A)
    assert table.entries(A) == nets("10.1.0.0/16", "fd00::/64")
    assert table.lookup(ip("10.1.200.1")) == A
    assert table.remove("10.1.9.9/16", A)
    assert table.entries(A) == nets("fd00::/64")


def test_inserting_an_existing_prefix_moves_it(table: AllowedIPs[str]) -> None:
    table.insert("10.244.1.0/24", A)
    table.insert("10.244.2.0/24", A)
    table.insert("10.244.1.0/24", B)
    assert table.lookup(ip("10.244.1.1")) == B
    assert table.entries(A) == nets("10.244.2.0/24")
    assert table.entries(B) == nets("10.244.1.0/24")
    assert not table.remove("10.244.1.0/24", A)  # no longer A's
    assert table.lookup(ip("10.244.1.1")) == B


def test_reinserting_for_the_same_peer_keeps_order(table: AllowedIPs[str]) -> None:
    for cidr in ("10.0.0.0/24", "fd00::/64", "10.0.1.0/24"):
        table.insert(cidr, A)
    table.insert("10.0.0.0/24", A)
    assert table.entries(A) == nets("10.0.0.0/24", "fd00::/64", "10.0.1.0/24")


def test_remove_by_peer_leaves_others_intact(table: AllowedIPs[str]) -> None:
    table.insert("10.0.0.0/8", A)
    table.insert("10.1.0.0/16", B)
    table.insert("10.1.1.0/24", A)
    table.insert("10.1.1.128/25", C)
    table.insert("fd00::/16", A)
    table.insert("fd00:1::/32", B)
    table.remove_by_peer(A)
    assert table.entries(A) == []
    assert table.lookup(ip("10.2.0.1")) is None
    assert table.lookup(ip("10.1.1.1")) == B
    assert table.lookup(ip("10.1.1.129")) == C
    assert table.lookup(ip("fd00::1")) is None
    assert table.lookup(ip("fd00:1::1")) == B
    assert table.entries(B) == nets("10.1.0.0/16", "fd00:1::/32")
    table.remove_by_peer(A)  # idempotent


def test_remove_single_prefix(table: AllowedIPs[str]) -> None:
    table.insert("10.0.0.0/8", A)
    table.insert("10.1.0.0/16", A)
    table.insert("10.1.0.0/24", B)
    assert table.remove("10.1.0.0/16", A)
    assert not table.remove("10.1.0.0/16", A)
    assert not table.remove("10.1.0.0/24", A)  # B's
    assert not table.remove("192.168.0.0/16", C)  # unknown peer
    assert table.lookup(ip("10.1.5.5")) == A
    assert table.lookup(ip("10.1.0.5")) == B
    assert table.entries(A) == nets("10.0.0.0/8")


def test_default_routes_can_be_removed(table: AllowedIPs[str]) -> None:
    table.insert("0.0.0.0/0", A)
    table.insert("::/0", A)
    table.insert("10.0.0.0/8", B)
    assert table.lookup(ip("1.1.1.1")) == A
    assert table.remove("0.0.0.0/0", A)
    assert table.lookup(ip("1.1.1.1")) is None
    assert table.lookup(ip("10.0.0.1")) == B
    assert table.lookup(ip("::2")) == A


def test_accepts_network_objects_and_rejects_garbage(table: AllowedIPs[str]) -> None:
    table.insert(ipaddress.ip_network("10.9.0.0/16"), A)
    assert table.lookup(ip("10.9.1.1")) == A
    for bad in ("10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.0/-1"):
        with pytest.raises(ValueError):
            table.insert(bad, A)
    with pytest.raises(ValueError):
        table.insert("10.0.0.0/8", None)  # type: ignore[arg-type]
    for bad_address in (b"", b"\x0a\x00\x00", bytes(5), bytes(17)):
        with pytest.raises(ValueError):
            table.lookup(bad_address)


def test_peers_are_keyed_by_identity() -> None:
    class Peer:
        pass

    p, q = Peer(), Peer()
    table: AllowedIPs[Peer] = AllowedIPs()
    table.insert("10.0.0.0/24", p)
    table.insert("10.0.1.0/24", q)
    table.remove_by_peer(p)
    assert table.lookup(ip("10.0.0.1")) is None
    assert table.lookup(ip("10.0.1.1")) is q


# --- model test -------------------------------------------------------------------------------


class BruteForce:
    def __init__(self) -> None:
        self.owner: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}

    def lookup(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        matches = [n for n in self.owner if n.version == address.version and address in n]
        return self.owner[max(matches, key=lambda n: n.prefixlen)] if matches else None

    def entries(self, peer: str) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return {n for n, p in self.owner.items() if p == peer}


def _check_trie_invariants(table: AllowedIPs[str]) -> int:
    """Walk both tries (private state, on purpose): children lie inside their parent's prefix on
    the side their slot says, parent links agree, and a node without a peer branches in two
    (removal splices out the rest). Returns the number of nodes holding a peer."""
    held = 0
    for trie in (table._v4, table._v6):
        stack = [(trie.root, None)]
        while stack:
            node, parent = stack.pop()
            if node is None:
                continue
            assert node.parent is parent
            assert node.key == trie._mask(node.key, node.cidr)
            if parent is not None:
                assert node.cidr > parent.cidr
                assert trie._mask(node.key, parent.cidr) == parent.key
                assert parent.children[trie._bit(node.key, parent.cidr)] is node
            if node.peer is None:
                assert all(child is not None for child in node.children), "peerless node that does not branch"
            else:
                held += 1
            stack.extend((child, node) for child in node.children)
    return held


# Addresses from a few small clusters so that prefixes nest, overlap and diverge often.
_v4 = st.builds(
    lambda hi, lo: ipaddress.IPv4Address((hi << 24) | lo),
    st.sampled_from([10, 11, 128, 255]), st.integers(0, 2**24 - 1) | st.sampled_from([0, 1, 2**23, 2**24 - 1]),
)
_v6 = st.builds(
    lambda hi, lo: ipaddress.IPv6Address((hi << 112) | lo),
    st.sampled_from([0, 0xFD00, 0xFD01, 0xFFFF]), st.integers(0, 2**112 - 1) | st.integers(0, 255),
)
_address = _v4 | _v6


@st.composite
def _prefix(draw: st.DrawFn) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address = draw(_address)
    width = address.max_prefixlen
    length = draw(st.integers(0, width) | st.sampled_from([0, 1, 7, 8, width - 1, width]))
    return ipaddress.ip_network(f"{address}/{length}", strict=False)


_peer = st.sampled_from([A, B, C])
_op = st.one_of(
    st.tuples(st.just("insert"), _prefix(), _peer),
    st.tuples(st.just("insert"), _prefix(), _peer),
    st.tuples(st.just("remove"), _prefix(), _peer),
    st.tuples(st.just("remove_by_peer"), st.none(), _peer),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=40), probes=st.lists(_address, min_size=1, max_size=20))
def test_matches_brute_force(ops: list[tuple[str, object, str]], probes: list) -> None:
    table: AllowedIPs[str] = AllowedIPs()
    model = BruteForce()
    for kind, network, peer in ops:
        if kind == "insert":
            table.insert(network, peer)  # type: ignore[arg-type]
            model.owner[network] = peer  # type: ignore[index]
        elif kind == "remove":
            owned = model.owner.get(network) == peer  # type: ignore[arg-type]
            assert table.remove(network, peer) == owned  # type: ignore[arg-type]
            if owned:
                del model.owner[network]  # type: ignore[arg-type]
        else:
            table.remove_by_peer(peer)
            model.owner = {n: p for n, p in model.owner.items() if p != peer}
        # Every stored prefix's own address, and its neighbours, are the sharpest probes.
        for n in model.owner:
            for probe in (n.network_address, n.broadcast_address):
                assert table.lookup(probe) == model.lookup(probe), (probe, kind)
        assert _check_trie_invariants(table) == len(model.owner)
    for probe in probes:
        assert table.lookup(probe) == model.lookup(probe), probe
        assert table.lookup(probe.packed) == model.lookup(probe), probe
    for peer in (A, B, C):
        assert set(table.entries(peer)) == model.entries(peer)
        assert len(table.entries(peer)) == len(model.entries(peer))
