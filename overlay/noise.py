"""The WireGuard handshake: Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s (whitepaper section 5.4.2-5.4.5).

Pure and deterministic: randomness (ephemeral private keys, sender indices) and clocks arrive as
arguments, and each step returns a new immutable ``HandshakeState`` instead of changing one in
place, so a forged or corrupted message can never wipe or advance a handshake in progress. The
flow, in the order of the code:

1. ``create_initiation`` (initiator): ``C = HASH(CONSTRUCTION)``, ``H = HASH(C || IDENTIFIER)``,
   ``H = HASH(H || S_r)``; mix the ephemeral ``E_i`` into C and H; ``(C, k) = KDF2(C, DH(E_i,
   S_r))`` encrypts ``S_i``; ``(C, k) = KDF2(C, DH(S_i, S_r))`` encrypts the TAI64N timestamp;
   each ciphertext is mixed into H.
2. ``consume_initiation`` (responder): the same steps from the other side; the decrypted static
   key names the peer (via the caller's lookup), the static-static DH is the peer's precomputed
   one. The timestamp must be newer than the last one accepted from that peer, and initiations
   from one peer are accepted at most every ``HANDSHAKE_INITIATION_RATE`` seconds (wireguard-go's
   flood guard). Only when everything has authenticated are the peer's timestamp and time of
   consumption updated: the one mutation in this module.
3. ``create_response`` (responder): mix ``E_r`` in; ``C = KDF1(C, DH(E_r, E_i))``, ``C = KDF1(C,
   DH(E_r, S_i))``; ``(C, T, k) = KDF3(C, Q)`` with the preshared key Q; ``H = HASH(H || T)``;
   an empty payload is encrypted with k to prove the keys.
4. ``consume_response`` (initiator): the same from the other side.
5. ``derive_keypair``: ``(T_i_send, T_i_recv) = KDF2(C, "")``; the responder's are swapped.

mac1 and mac2 are not computed here (``cookie.py`` does that on the packed message): the
messages come back with both fields zero, and incoming ones must have been checked by the caller
before any Diffie-Hellman happens here. The index fields (sender, receiver) are not covered by
the Noise transcript; they are protected by mac1 only, as in WireGuard.

Every failure raises one ``HandshakeError`` with a short reason and changes nothing. Python cannot
zero memory reliably; no module-level state holds secrets, secret fields are left out of reprs,
and callers drop a ``HandshakeState`` once ``derive_keypair`` has run.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from overlay.crypto import (
    DH,
    HASH,
    KDF1,
    KDF2,
    KDF3,
    KEY_LEN,
    ZERO_KEY,
    AEAD_decrypt,
    AEAD_encrypt,
    CryptoError,
    constant_time_equal,
    public_key,
)
from overlay.messages import (
    TIMESTAMP_SIZE,
    MessageInitiation,
    MessageResponse,
    tai64n,
    timestamp_after,
)

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
#: Initiations from one peer closer together than this are dropped (50 per second).
HANDSHAKE_INITIATION_RATE = 1 / 50  # seconds

INITIAL_CHAINING_KEY = HASH(CONSTRUCTION)
INITIAL_HASH = HASH(INITIAL_CHAINING_KEY + IDENTIFIER)

ZERO_TIMESTAMP = bytes(TIMESTAMP_SIZE)


class HandshakeError(Exception):
    """A handshake message that is not accepted; the reason is short and carries no secrets."""


class HandshakeStage(enum.Enum):
    """Where a handshake stands, named as wireguard-go's handshake states."""

    INITIATION_CREATED = "initiation created"
    INITIATION_CONSUMED = "initiation consumed"
    RESPONSE_CREATED = "response created"
    RESPONSE_CONSUMED = "response consumed"


@dataclass(frozen=True)
class StaticIdentity:
    """This interface's static Curve25519 key pair."""

    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> StaticIdentity:
        return cls(private=private, public=public_key(private))


@dataclass(eq=False)
class Peer:
    """What the handshake keeps per remote peer.

    ``precomputed_static_static`` is ``DH(local private, remote static)``, or zeros when the
    remote key is of low order (every handshake with that peer then fails, as in wireguard-go).
    Rebuild the ``Peer`` (``Peer.create``) when the local private key changes.
    """

    remote_static: bytes
    preshared_key: bytes = field(default=ZERO_KEY, repr=False)
    precomputed_static_static: bytes = field(default=ZERO_KEY, repr=False)
    last_timestamp: bytes = field(default=ZERO_TIMESTAMP, repr=False)
    last_initiation_consumption: float | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls, local: StaticIdentity, remote_static: bytes, preshared_key: bytes = ZERO_KEY
    ) -> Peer:
        if len(remote_static) != KEY_LEN or len(preshared_key) != KEY_LEN:
            raise ValueError("keys are 32 bytes")
        try:
            precomputed = DH(local.private, remote_static)
        except CryptoError:
            precomputed = ZERO_KEY
        return cls(remote_static, preshared_key, precomputed)


@dataclass(frozen=True)
class HandshakeState:
    """One handshake between two messages: chaining key, transcript hash, ephemerals, indices.

    ``local_ephemeral`` is the initiator's ephemeral private key (kept until the response);
    ``remote_ephemeral`` is the initiator's ephemeral public key, held by the responder.
    """

    stage: HandshakeStage
    remote_static: bytes
    chaining_key: bytes = field(repr=False)
    hash: bytes = field(repr=False)
    local_index: int | None = None
    remote_index: int | None = None
    local_ephemeral: bytes = field(default=b"", repr=False)
    remote_ephemeral: bytes = field(default=b"", repr=False)


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        return DH(private, public)
    except CryptoError:
        raise HandshakeError("low-order public key") from None


def _open(key: bytes, ciphertext: bytes, transcript: bytes, what: str) -> bytes:
    try:
        return AEAD_decrypt(key, 0, ciphertext, transcript)
    except CryptoError:
        raise HandshakeError(f"{what} did not authenticate") from None


def create_initiation(
    local: StaticIdentity, peer: Peer, sender_index: int, now: float, ephemeral_private: bytes
) -> tuple[MessageInitiation, HandshakeState]:
    """Message 1, with mac1/mac2 zero, and the state to consume the response with.

    ``now`` is wall-clock seconds since the epoch (for the TAI64N timestamp);
    ``ephemeral_private`` is a fresh ``crypto.generate_private_key()``.
    """
    if constant_time_equal(peer.precomputed_static_static, ZERO_KEY):
        raise HandshakeError("low-order peer public key")
    h = HASH(INITIAL_HASH + peer.remote_static)
    ephemeral = public_key(ephemeral_private)
    c = KDF1(INITIAL_CHAINING_KEY, ephemeral)
    h = HASH(h + ephemeral)
    c, key = KDF2(c, _dh(ephemeral_private, peer.remote_static))
    encrypted_static = AEAD_encrypt(key, 0, local.public, h)
    h = HASH(h + encrypted_static)
    c, key = KDF2(c, peer.precomputed_static_static)
    encrypted_timestamp = AEAD_encrypt(key, 0, tai64n(now), h)
    h = HASH(h + encrypted_timestamp)
    message = MessageInitiation(sender_index, ephemeral, encrypted_static, encrypted_timestamp)
    state = HandshakeState(
        stage=HandshakeStage.INITIATION_CREATED,
        remote_static=peer.remote_static,
        chaining_key=c,
        hash=h,
        local_index=sender_index,
        local_ephemeral=ephemeral_private,
    )
    return message, state


def consume_initiation(
    local: StaticIdentity,
    message: MessageInitiation,
    lookup_peer_by_public: Callable[[bytes], Peer | None],
    *,
    received_at: float,
) -> tuple[Peer, HandshakeState]:
    """Authenticate message 1 and find its peer; then (only then) record its timestamp.

    ``received_at`` is a monotonic clock in seconds, for the flood guard.
    """
    h = HASH(INITIAL_HASH + local.public)
    c = KDF1(INITIAL_CHAINING_KEY, message.ephemeral)
    h = HASH(h + message.ephemeral)
    c, key = KDF2(c, _dh(local.private, message.ephemeral))
    remote_static = _open(key, message.encrypted_static, h, "static key")
    h = HASH(h + message.encrypted_static)
    peer = lookup_peer_by_public(remote_static)
    if peer is None:
        raise HandshakeError("unknown peer")
    if constant_time_equal(peer.precomputed_static_static, ZERO_KEY):
        raise HandshakeError("low-order peer public key")
    c, key = KDF2(c, peer.precomputed_static_static)
    timestamp = _open(key, message.encrypted_timestamp, h, "timestamp")
    h = HASH(h + message.encrypted_timestamp)
    if not timestamp_after(timestamp, peer.last_timestamp):
        raise HandshakeError("replayed or stale timestamp")
    last = peer.last_initiation_consumption
    if last is not None and received_at < last + HANDSHAKE_INITIATION_RATE:
        raise HandshakeError("initiation flood")
    peer.last_timestamp = timestamp
    peer.last_initiation_consumption = received_at
    state = HandshakeState(
        stage=HandshakeStage.INITIATION_CONSUMED,
        remote_static=remote_static,
        chaining_key=c,
        hash=h,
        remote_index=message.sender,
        remote_ephemeral=message.ephemeral,
    )
    return peer, state


def create_response(
    peer: Peer, state: HandshakeState, sender_index: int, ephemeral_private: bytes
) -> tuple[MessageResponse, HandshakeState]:
    """Message 2, with mac1/mac2 zero, and the finished responder state."""
    if state.stage is not HandshakeStage.INITIATION_CONSUMED or state.remote_index is None:
        raise HandshakeError("no consumed initiation to respond to")
    if not constant_time_equal(state.remote_static, peer.remote_static):
        raise HandshakeError("handshake belongs to another peer")
    ephemeral = public_key(ephemeral_private)
    c = KDF1(state.chaining_key, ephemeral)
    h = HASH(state.hash + ephemeral)
    c = KDF1(c, _dh(ephemeral_private, state.remote_ephemeral))
    c = KDF1(c, _dh(ephemeral_private, peer.remote_static))
    c, tau, key = KDF3(c, peer.preshared_key)
    h = HASH(h + tau)
    encrypted_nothing = AEAD_encrypt(key, 0, b"", h)
    h = HASH(h + encrypted_nothing)
    message = MessageResponse(sender_index, state.remote_index, ephemeral, encrypted_nothing)
    done = HandshakeState(
        stage=HandshakeStage.RESPONSE_CREATED,
        remote_static=state.remote_static,
        chaining_key=c,
        hash=h,
        local_index=sender_index,
        remote_index=state.remote_index,
    )
    return message, done


def consume_response(
    local: StaticIdentity, peer: Peer, state: HandshakeState, message: MessageResponse
) -> HandshakeState:
    """Authenticate message 2 against the initiation ``state``; returns the finished state."""
    if state.stage is not HandshakeStage.INITIATION_CREATED:
        raise HandshakeError("no initiation awaiting a response")
    if message.receiver != state.local_index:
        raise HandshakeError("response for another handshake")
    if not constant_time_equal(state.remote_static, peer.remote_static):
        raise HandshakeError("handshake belongs to another peer")
    c = KDF1(state.chaining_key, message.ephemeral)
    h = HASH(state.hash + message.ephemeral)
    c = KDF1(c, _dh(state.local_ephemeral, message.ephemeral))
    c = KDF1(c, _dh(local.private, message.ephemeral))
    c, tau, key = KDF3(c, peer.preshared_key)
    h = HASH(h + tau)
    _open(key, message.encrypted_nothing, h, "response")
    h = HASH(h + message.encrypted_nothing)
    return HandshakeState(
        stage=HandshakeStage.RESPONSE_CONSUMED,
        remote_static=state.remote_static,
        chaining_key=c,
        hash=h,
        local_index=state.local_index,
        remote_index=message.sender,
    )


def derive_keypair(state: HandshakeState, initiator: bool) -> tuple[bytes, bytes]:
    """The transport keys ``(send, recv)`` of a finished handshake.

    The initiator sends with the first output of ``KDF2(C, "")`` and the responder receives with
    it. ``initiator`` must agree with the state's stage: a role mix-up raises ``ValueError``
    rather than yield swapped keys.
    """
    if state.stage is HandshakeStage.RESPONSE_CONSUMED:
        is_initiator = True
    elif state.stage is HandshakeStage.RESPONSE_CREATED:
        is_initiator = False
    else:
        raise ValueError("handshake not finished")
    if initiator != is_initiator:
        raise ValueError("role does not match the handshake state")
    first, second = KDF2(state.chaining_key, b"")
    return (first, second) if initiator else (second, first)
