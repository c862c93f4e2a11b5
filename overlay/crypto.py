"""WireGuard's cryptographic primitives, named as in the whitepaper (5.4), as pure functions.

Everything works on raw ``bytes`` so that the handshake (``noise.py``), the cookie MACs
(``cookie.py``) and the data path can be tested byte for byte against the specification:

- ``DH``, ``generate_private_key``, ``public_key``: Curve25519 (X25519) on raw 32-byte keys, via
  ``cryptography``. Private keys are clamped when generated, as ``wg genkey`` does, so that they
  print the same way; X25519 clamps again internally anyway. An all-zero shared secret (a
  low-order public key) raises ``CryptoError``, as wireguard-go refuses it too.
- ``HASH`` (BLAKE2s-256), ``MAC`` (keyed BLAKE2s-128), ``HMAC`` (HMAC-BLAKE2s-256) and the HKDF
  chain ``KDF1``/``KDF2``/``KDF3``, on ``hashlib``: ``cryptography``'s BLAKE2s allows neither keys
  nor 16-byte digests.
- ``AEAD_encrypt``/``AEAD_decrypt``: ChaCha20-Poly1305 whose 96-bit nonce is 32 zero bits followed
  by the 64-bit little-endian counter.
- ``XAEAD_encrypt``/``XAEAD_decrypt``: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha), used only by
  cookie replies. ``cryptography`` has no XChaCha20, so ``hchacha20`` derives HChaCha20 from one
  ChaCha20 keystream block: a block is ``rounds(state) + state`` word-wise mod 2^32, and the
  initial state is known (constants, key, and the 16-byte counter-and-nonce, which is exactly
  HChaCha20's nonce), so HChaCha20's output words 0..3 and 12..15 are ``block - state`` there.
  That is one C-speed block per cookie instead of a pure-Python permutation.
- ``key_to_base64``/``key_from_base64``: keys as ``wg`` prints and reads them.
- ``constant_time_equal``: every comparison of secrets or MACs goes through it.

The sizes (``KEY_LEN``, ``MAC_LEN``, ``TAG_LEN``, ``XNONCE_LEN``), ``MAX_COUNTER`` and
``ZERO_KEY`` are defined here once; the wire formats, the handshake, the cookies and the keypairs
import them.

Failures to authenticate raise ``CryptoError`` and nothing else. No function logs, and none
keeps a reference to a key after returning.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

#: Curve25519 keys, symmetric keys, hashes and chaining keys are all 32 bytes.
KEY_LEN = 32
HASH_LEN = 32
#: mac1, mac2 and cookies are 16 bytes; so is the Poly1305 tag.
MAC_LEN = 16
TAG_LEN = 16
#: XChaCha20's nonce; HChaCha20 takes its first 16 bytes.
XNONCE_LEN = 24
HCHACHA_NONCE_LEN = 16
#: The largest AEAD counter the 64-bit nonce field can carry.
MAX_COUNTER = 2**64 - 1
#: The all-zero key: an absent preshared key, and the result DH refuses.
ZERO_KEY = bytes(KEY_LEN)

#: "expand 32-byte k", ChaCha's first four state words.
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_WORDS = struct.Struct("<16I")
_HALF = struct.Struct("<8I")


class CryptoError(Exception):
    """A ciphertext did not authenticate, or a Diffie-Hellman result was all zero."""


# --- Curve25519 -------------------------------------------------------------------------------


def clamp(private: bytes) -> bytes:
    """Clamp a 32-byte scalar as X25519 does (RFC 7748 section 5)."""
    _check_len(private, KEY_LEN, "private key")
    scalar = bytearray(private)
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return bytes(scalar)


def generate_private_key() -> bytes:
    """A fresh clamped Curve25519 private key from the OS's CSPRNG (``wg genkey``)."""
    return clamp(os.urandom(KEY_LEN))


def public_key(private: bytes) -> bytes:
    """The Curve25519 public key of a raw private key (``wg pubkey``)."""
    _check_len(private, KEY_LEN, "private key")
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def DH(private: bytes, public: bytes) -> bytes:
    """X25519(private, public); raises ``CryptoError`` when the result is all zero."""
    _check_len(private, KEY_LEN, "private key")
    _check_len(public, KEY_LEN, "public key")
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError as exc:  # cryptography refuses an all-zero result
        raise CryptoError("low-order public key") from exc
    if hmac.compare_digest(shared, ZERO_KEY):  # should a backend ever return zeros instead
        raise CryptoError("low-order public key")
    return shared


# --- BLAKE2s and the HKDF chain ---------------------------------------------------------------


def HASH(data: bytes) -> bytes:
    """BLAKE2s-256 of ``data``."""
    return hashlib.blake2s(data).digest()


def MAC(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """Keyed BLAKE2s with a 16-byte digest (mac1 and mac2); ``data`` may be a view of a message."""
    return hashlib.blake2s(data, digest_size=MAC_LEN, key=key).digest()


def HMAC(key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) over BLAKE2s-256, block size 64."""
    return hmac.new(key, data, hashlib.blake2s).digest()


def KDF1(key: bytes, data: bytes) -> bytes:
    """HKDF with HMAC-BLAKE2s, one 32-byte output."""
    prk = HMAC(key, data)
    return HMAC(prk, b"\x01")


def KDF2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """HKDF with HMAC-BLAKE2s, two 32-byte outputs."""
    prk = HMAC(key, data)
    t1 = HMAC(prk, b"\x01")
    t2 = HMAC(prk, t1 + b"\x02")
    return t1, t2


def KDF3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """HKDF with HMAC-BLAKE2s, three 32-byte outputs."""
    prk = HMAC(key, data)
    t1 = HMAC(prk, b"\x01")
    t2 = HMAC(prk, t1 + b"\x02")
    t3 = HMAC(prk, t2 + b"\x03")
    return t1, t2, t3


# --- ChaCha20-Poly1305 ------------------------------------------------------------------------


def counter_nonce(counter: int) -> bytes:
    """WireGuard's 96-bit AEAD nonce: 32 zero bits, then the counter as 64-bit little-endian."""
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError("AEAD counter out of range")
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")


def AEAD_encrypt(key: bytes, counter: int, plaintext: bytes, associated_data: bytes) -> bytes:
    """ChaCha20-Poly1305 of ``plaintext``; returns ciphertext || 16-byte tag."""
    _check_len(key, KEY_LEN, "AEAD key")
    return ChaCha20Poly1305(key).encrypt(counter_nonce(counter), plaintext, associated_data)


def AEAD_decrypt(key: bytes, counter: int, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Open a ChaCha20-Poly1305 ciphertext; raises ``CryptoError`` unless it authenticates."""
    _check_len(key, KEY_LEN, "AEAD key")
    if len(ciphertext) < TAG_LEN:
        raise CryptoError("ciphertext shorter than its tag")
    try:
        return ChaCha20Poly1305(key).decrypt(counter_nonce(counter), ciphertext, associated_data)
    except InvalidTag as exc:
        raise CryptoError("authentication failed") from exc


# --- XChaCha20-Poly1305 -----------------------------------------------------------------------


def hchacha20(key: bytes, nonce: bytes) -> bytes:
    """HChaCha20(key, 16-byte nonce) -> 32-byte subkey (draft-irtf-cfrg-xchacha section 2.2).

    ``cryptography``'s ChaCha20 takes a 16-byte "nonce" that is state words 12..15 (the 32-bit
    counter, then the 96-bit nonce), which is exactly where HChaCha20 puts its nonce. One block
    of keystream is the permuted state plus the initial state; subtracting the known initial
    words 0..3 and 12..15 leaves the permuted words HChaCha20 outputs.
    """
    _check_len(key, KEY_LEN, "HChaCha20 key")
    _check_len(nonce, HCHACHA_NONCE_LEN, "HChaCha20 nonce")
    encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    block = _WORDS.unpack(encryptor.update(bytes(64)))
    initial_nonce = struct.unpack("<4I", nonce)
    out = [(block[i] - _SIGMA[i]) & 0xFFFFFFFF for i in range(4)]
    out += [(block[12 + i] - initial_nonce[i]) & 0xFFFFFFFF for i in range(4)]
    return _HALF.pack(*out)


def _xchacha_subkey_and_nonce(key: bytes, nonce: bytes) -> tuple[bytes, bytes]:
    _check_len(nonce, XNONCE_LEN, "XChaCha20 nonce")
    return hchacha20(key, nonce[:HCHACHA_NONCE_LEN]), b"\x00\x00\x00\x00" + nonce[
        HCHACHA_NONCE_LEN:
    ]


def XAEAD_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """XChaCha20-Poly1305 with a 24-byte nonce; returns ciphertext || 16-byte tag."""
    subkey, short_nonce = _xchacha_subkey_and_nonce(key, nonce)
    return ChaCha20Poly1305(subkey).encrypt(short_nonce, plaintext, associated_data)


def XAEAD_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Open an XChaCha20-Poly1305 ciphertext; raises ``CryptoError`` unless it authenticates."""
    if len(ciphertext) < TAG_LEN:
        raise CryptoError("ciphertext shorter than its tag")
    subkey, short_nonce = _xchacha_subkey_and_nonce(key, nonce)
    try:
        return ChaCha20Poly1305(subkey).decrypt(short_nonce, ciphertext, associated_data)
    except InvalidTag as exc:
        raise CryptoError("authentication failed") from exc


# --- encodings and comparison -----------------------------------------------------------------


def key_to_base64(key: bytes) -> str:
    """A 32-byte key as ``wg`` prints it: standard base64, 44 characters with one ``=``."""
    _check_len(key, KEY_LEN, "key")
    return base64.b64encode(key).decode("ascii")


def key_from_base64(text: str) -> bytes:
    """Parse a key as ``wg`` writes it; raises ``ValueError`` (without echoing it) if malformed."""
    if len(text) != 44 or not text.endswith("="):
        raise ValueError("a key is 44 base64 characters ending in '='")
    try:
        key = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("a key is 44 base64 characters ending in '='") from exc
    if len(key) != KEY_LEN:
        raise ValueError("a key decodes to 32 bytes")
    return key


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare secrets or MACs in time independent of where they differ."""
    return hmac.compare_digest(a, b)


def _check_len(value: bytes, length: int, what: str) -> None:
    if len(value) != length:
        raise ValueError(f"{what} must be {length} bytes, got {len(value)}")
