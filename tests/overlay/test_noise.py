"""overlay.noise: the WireGuard handshake, checked against an independent Noise implementation and
attacked with replays, floods, corrupted bytes, unknown peers and mismatched preshared keys.

The fixed vector below was produced by ``noiseprotocol`` 0.3.1 (an unrelated Python
implementation of the Noise framework) running Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s with the
prologue "WireGuard v1 zx2c4 Jason@zx2c4.com" and the keys below: WireGuard's handshake is exactly
that Noise pattern, so its message bodies and transport keys must match byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import crypto
from overlay.messages import MessageInitiation, MessageResponse, tai64n
from overlay.noise import (
    HANDSHAKE_INITIATION_RATE,
    INITIAL_CHAINING_KEY,
    INITIAL_HASH,
    HandshakeError,
    HandshakeStage,
    HandshakeState,
    Peer,
    StaticIdentity,
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    derive_keypair,
)

NOW = 1_700_000_000.123456789


def test_initial_chaining_key_and_hash_are_the_published_constants() -> None:
    # The constants wireguard-go, boringtun and the kernel module hard-code (whitepaper 5.4).
    assert INITIAL_CHAINING_KEY.hex() == (
        "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    )
    assert INITIAL_HASH.hex() == "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"


# --- the independent vector -------------------------------------------------------------------

VECTOR_INITIATOR_STATIC = bytes.fromhex("e8" + "11" * 30 + "50")
VECTOR_RESPONDER_STATIC = bytes.fromhex("48" + "22" * 30 + "60")
VECTOR_INITIATOR_EPHEMERAL = bytes.fromhex("58" + "33" * 30 + "70")
VECTOR_RESPONDER_EPHEMERAL = bytes.fromhex("68" + "44" * 30 + "40")
VECTOR_PSK = bytes(range(100, 132))
# Message 1 from ephemeral to encrypted timestamp (bytes 8..116 of the initiation).
VECTOR_INITIATION_BODY = bytes.fromhex(
    "2b02574b26f1d3fac1586366d397db331f1c4f9546abfbe35290c8007963f14f"
    "1a090babbb17717cedb0be7b7ef761ea5a3bc8ebc6433adb5bfea2fb5713cc49"
    "22eadd248c74ec3fdea3cc20b3ba3e19e0cb78efbade321813aac302fff5b2c4"
    "3eaf9a45174bb20babbee880"
)
# Message 2 from ephemeral to encrypted nothing (bytes 12..60 of the response).
VECTOR_RESPONSE_BODY = bytes.fromhex(
    "c1e2e9eaf27c45706771cbfeedd5acb58f0c165fea5cae18a34d7c30805a7e1f"
    "2bf730e38435b8b0c28e4645509091e5"
)
# The first transport message each way, "ping" then "pong", at counter 0 with empty AD.
VECTOR_PING = bytes.fromhex("d2062913d5b16115da3419f1ac61de4eed07cf9c")
VECTOR_PONG = bytes.fromhex("358eb22d54a77a5b02ae83eb00f2d2dee8e92c5f")


def test_handshake_matches_an_independent_noise_implementation() -> None:
    alice = StaticIdentity.from_private(VECTOR_INITIATOR_STATIC)
    bob = StaticIdentity.from_private(VECTOR_RESPONDER_STATIC)
    bob_at_alice = Peer.create(alice, bob.public, VECTOR_PSK)
    alice_at_bob = Peer.create(bob, alice.public, VECTOR_PSK)

    initiation, alice_state = create_initiation(
        alice, bob_at_alice, 7, NOW, VECTOR_INITIATOR_EPHEMERAL
    )
    assert initiation.pack()[8:116] == VECTOR_INITIATION_BODY
    assert initiation.mac1 == initiation.mac2 == bytes(16)

    peer, bob_state = consume_initiation(
        bob, initiation, {alice.public: alice_at_bob}.get, received_at=0
    )
    assert peer is alice_at_bob
    assert peer.last_timestamp == tai64n(NOW)
    response, bob_done = create_response(peer, bob_state, 9, VECTOR_RESPONDER_EPHEMERAL)
    assert response.pack()[12:60] == VECTOR_RESPONSE_BODY
    alice_done = consume_response(alice, bob_at_alice, alice_state, response)

    alice_send, alice_recv = derive_keypair(alice_done, initiator=True)
    bob_send, bob_recv = derive_keypair(bob_done, initiator=False)
    assert crypto.AEAD_encrypt(alice_send, 0, b"ping", b"") == VECTOR_PING
    assert crypto.AEAD_encrypt(bob_send, 0, b"pong", b"") == VECTOR_PONG
    assert (alice_send, alice_recv) == (bob_recv, bob_send)


# --- fixtures for the attacks -----------------------------------------------------------------


@dataclass
class Pair:
    """Two interfaces that know each other, and a handshake from a to b up to the response."""

    a: StaticIdentity
    b: StaticIdentity
    b_at_a: Peer
    a_at_b: Peer

    def lookup_at_b(self, public: bytes) -> Peer | None:
        return self.a_at_b if public == self.a.public else None

    def lookup_at_a(self, public: bytes) -> Peer | None:
        return self.b_at_a if public == self.b.public else None


def make_pair(psk_a: bytes = bytes(32), psk_b: bytes | None = None) -> Pair:
    a = StaticIdentity.from_private(crypto.generate_private_key())
    b = StaticIdentity.from_private(crypto.generate_private_key())
    return Pair(
        a,
        b,
        Peer.create(a, b.public, psk_a),
        Peer.create(b, a.public, psk_a if psk_b is None else psk_b),
    )


def handshake(
    initiator: StaticIdentity,
    responder: StaticIdentity,
    responder_at_initiator: Peer,
    lookup_at_responder: Callable[[bytes], Peer | None],
    now: float = NOW,
    received_at: float = 0.0,
) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    initiation, i_state = create_initiation(
        initiator, responder_at_initiator, 1, now, crypto.generate_private_key()
    )
    peer, r_state = consume_initiation(
        responder,
        initiation,
        lookup_at_responder,
        received_at=received_at,
    )
    response, r_done = create_response(peer, r_state, 2, crypto.generate_private_key())
    i_done = consume_response(initiator, responder_at_initiator, i_state, response)
    assert (i_done.local_index, i_done.remote_index) == (1, 2)
    assert (r_done.local_index, r_done.remote_index) == (2, 1)
    return derive_keypair(i_done, initiator=True), derive_keypair(r_done, initiator=False)


def test_full_handshake_both_ways_gives_matching_distinct_keys() -> None:
    pair = make_pair(psk_a=bytes(range(32)))
    (a_send, a_recv), (b_send, b_recv) = handshake(pair.a, pair.b, pair.b_at_a, pair.lookup_at_b)
    assert a_send == b_recv and a_recv == b_send and a_send != a_recv
    sealed = crypto.AEAD_encrypt(a_send, 0, b"hello", b"")
    assert crypto.AEAD_decrypt(b_recv, 0, sealed, b"") == b"hello"

    (b_send2, b_recv2), (a_send2, a_recv2) = handshake(
        pair.b, pair.a, pair.a_at_b, pair.lookup_at_a
    )
    assert b_send2 == a_recv2 and b_recv2 == a_send2
    assert {b_send2, b_recv2}.isdisjoint({a_send, a_recv})


def initiation_for(pair: Pair, now: float = NOW) -> tuple[MessageInitiation, HandshakeState]:
    return create_initiation(pair.a, pair.b_at_a, 11, now, crypto.generate_private_key())


def test_replayed_initiation_is_refused_by_its_timestamp() -> None:
    pair = make_pair()
    initiation, _ = initiation_for(pair)
    consume_initiation(pair.b, initiation, pair.lookup_at_b, received_at=0.0)
    accepted = pair.a_at_b.last_timestamp
    with pytest.raises(HandshakeError, match="timestamp"):
        consume_initiation(pair.b, initiation, pair.lookup_at_b, received_at=60.0)
    assert pair.a_at_b.last_timestamp == accepted
    assert pair.a_at_b.last_initiation_consumption == 0.0

    older, _ = initiation_for(pair, now=NOW - 1)
    with pytest.raises(HandshakeError, match="timestamp"):
        consume_initiation(pair.b, older, pair.lookup_at_b, received_at=60.0)
    newer, _ = initiation_for(pair, now=NOW + 1)
    consume_initiation(pair.b, newer, pair.lookup_at_b, received_at=60.0)
    assert pair.a_at_b.last_timestamp == tai64n(NOW + 1)


def test_initiations_faster_than_the_rate_are_refused() -> None:
    pair = make_pair()
    consume_initiation(pair.b, initiation_for(pair)[0], pair.lookup_at_b, received_at=10.0)
    flood, _ = initiation_for(pair, now=NOW + 1)
    with pytest.raises(HandshakeError, match="flood"):
        consume_initiation(
            pair.b, flood, pair.lookup_at_b, received_at=10.0 + HANDSHAKE_INITIATION_RATE / 2
        )
    assert pair.a_at_b.last_timestamp == tai64n(NOW)
    consume_initiation(
        pair.b, flood, pair.lookup_at_b, received_at=10.0 + HANDSHAKE_INITIATION_RATE
    )


def flipped(wire: bytes, index: int, mask: int) -> bytes:
    out = bytearray(wire)
    out[index] ^= mask
    return bytes(out)


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 115), st.integers(1, 255))
def test_any_flipped_byte_of_an_initiation_is_refused_without_side_effects(
    index: int, mask: int
) -> None:
    pair = make_pair()
    initiation, _ = initiation_for(pair)
    corrupted = MessageInitiation.unpack(flipped(initiation.pack(), index, mask))
    with pytest.raises(HandshakeError):
        consume_initiation(pair.b, corrupted, pair.lookup_at_b, received_at=0.0)
    assert pair.a_at_b.last_timestamp == bytes(12)
    assert pair.a_at_b.last_initiation_consumption is None
    consume_initiation(pair.b, initiation, pair.lookup_at_b, received_at=0.0)  # still accepted


@settings(max_examples=40, deadline=None)
@given(st.integers(8, 59), st.integers(1, 255))
def test_any_flipped_byte_of_a_response_is_refused_and_the_handshake_survives(
    index: int, mask: int
) -> None:
    pair = make_pair()
    initiation, a_state = initiation_for(pair)
    peer, b_state = consume_initiation(pair.b, initiation, pair.lookup_at_b, received_at=0.0)
    response, _ = create_response(peer, b_state, 22, crypto.generate_private_key())
    corrupted = MessageResponse.unpack(flipped(response.pack(), index, mask))
    with pytest.raises(HandshakeError):
        consume_response(pair.a, pair.b_at_a, a_state, corrupted)
    done = consume_response(pair.a, pair.b_at_a, a_state, response)
    assert done.stage is HandshakeStage.RESPONSE_CONSUMED


def test_indices_are_not_in_the_transcript() -> None:
    # As in WireGuard, the sender index is protected by mac1 only, not by the Noise transcript.
    pair = make_pair()
    initiation, _ = initiation_for(pair)
    _, state = consume_initiation(
        pair.b, replace(initiation, sender=99), pair.lookup_at_b, received_at=0
    )
    assert state.remote_index == 99


def test_unknown_peer_is_refused_without_side_effects() -> None:
    pair = make_pair()
    initiation, _ = initiation_for(pair)
    with pytest.raises(HandshakeError, match="unknown peer"):
        consume_initiation(pair.b, initiation, lambda public: None, received_at=0.0)
    stranger = StaticIdentity.from_private(crypto.generate_private_key())
    with pytest.raises(HandshakeError):  # addressed to someone else: the static key won't open
        consume_initiation(stranger, initiation, pair.lookup_at_b, received_at=0.0)
    assert pair.a_at_b.last_timestamp == bytes(12)


def test_preshared_key_mismatch_fails_at_the_response() -> None:
    pair = make_pair(psk_a=b"\x01" * 32, psk_b=b"\x02" * 32)
    initiation, a_state = initiation_for(pair)
    peer, b_state = consume_initiation(pair.b, initiation, pair.lookup_at_b, received_at=0.0)
    response, _ = create_response(peer, b_state, 22, crypto.generate_private_key())
    with pytest.raises(HandshakeError, match="response"):
        consume_response(pair.a, pair.b_at_a, a_state, response)


def test_messages_out_of_order_or_for_another_peer_are_refused() -> None:
    pair = make_pair()
    initiation, a_state = initiation_for(pair)
    peer, b_state = consume_initiation(pair.b, initiation, pair.lookup_at_b, received_at=0.0)
    response, b_done = create_response(peer, b_state, 22, crypto.generate_private_key())
    with pytest.raises(HandshakeError):
        consume_response(pair.a, pair.b_at_a, a_state, replace(response, receiver=12))
    with pytest.raises(HandshakeError):
        consume_response(pair.a, pair.b_at_a, b_state, response)
    with pytest.raises(HandshakeError):
        create_response(peer, a_state, 23, crypto.generate_private_key())
    with pytest.raises(HandshakeError):
        create_response(peer, b_done, 23, crypto.generate_private_key())
    other = make_pair()
    with pytest.raises(HandshakeError):
        create_response(other.a_at_b, b_state, 23, crypto.generate_private_key())
    with pytest.raises(HandshakeError):
        consume_response(pair.a, other.b_at_a, a_state, response)


def test_derive_keypair_checks_the_role_and_that_the_handshake_finished() -> None:
    pair = make_pair()
    initiation, a_state = initiation_for(pair)
    peer, b_state = consume_initiation(pair.b, initiation, pair.lookup_at_b, received_at=0.0)
    _, b_done = create_response(peer, b_state, 22, crypto.generate_private_key())
    with pytest.raises(ValueError):
        derive_keypair(a_state, initiator=True)
    with pytest.raises(ValueError):
        derive_keypair(b_state, initiator=False)
    with pytest.raises(ValueError):
        derive_keypair(b_done, initiator=True)


def test_low_order_peer_keys_cannot_handshake() -> None:
    local = StaticIdentity.from_private(crypto.generate_private_key())
    bad_peer = Peer.create(local, bytes(32))
    assert bad_peer.precomputed_static_static == bytes(32)
    with pytest.raises(HandshakeError):
        create_initiation(local, bad_peer, 1, NOW, crypto.generate_private_key())


def test_low_order_ephemeral_is_refused() -> None:
    pair = make_pair()
    initiation, _ = initiation_for(pair)
    with pytest.raises(HandshakeError, match="low-order"):
        consume_initiation(
            pair.b, replace(initiation, ephemeral=bytes(32)), pair.lookup_at_b, received_at=0
        )


def test_no_private_material_in_reprs() -> None:
    pair = make_pair(psk_a=b"\x07" * 32)
    _, a_state = initiation_for(pair)
    text = repr(pair.a) + repr(pair.b_at_a) + repr(a_state)
    for secret in (
        pair.a.private,
        pair.b_at_a.preshared_key,
        a_state.chaining_key,
        a_state.local_ephemeral,
    ):
        assert repr(secret) not in text and secret.hex() not in text
