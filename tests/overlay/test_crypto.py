"""overlay.crypto against published vectors and independent implementations.

Sources of the expected values, each computed by someone else's code:
- HChaCha20 and XChaCha20-Poly1305: draft-irtf-cfrg-xchacha-03, sections 2.2.1 and A.3.1.
- X25519: RFC 7748 section 6.1.
- BLAKE2s-256 of the Noise construction string: the constant that wireguard-go, boringtun and
  the kernel module hard-code (whitepaper 5.4).
- Keyed BLAKE2s-128 (mac1/mac2): OpenSSL 3.0's ``BLAKE2SMAC`` with ``size:16``.
- HMAC-BLAKE2s and the KDF chain: a public WireGuard key-derivation KAT, and OpenSSL's
  HMAC(BLAKE2s256) through ``cryptography`` for every key length, including one longer than the
  64-byte block (which RFC 2104 hashes first).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as openssl_hmac
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay import crypto
from overlay.crypto import (
    DH,
    HASH,
    HMAC,
    KDF1,
    KDF2,
    KDF3,
    MAC,
    AEAD_decrypt,
    AEAD_encrypt,
    CryptoError,
    XAEAD_decrypt,
    XAEAD_encrypt,
)

SUNSCREEN = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
    b"future, sunscreen would be it."
)


# --- XChaCha20 (draft-irtf-cfrg-xchacha-03) ---------------------------------------------------


def test_hchacha20_draft_vector() -> None:
    # draft-irtf-cfrg-xchacha-03, section 2.2.1
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    expected = bytes.fromhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    assert crypto.hchacha20(key, nonce) == expected


XCHACHA_KEY = bytes(range(0x80, 0xA0))
XCHACHA_NONCE = bytes(range(0x40, 0x58))
XCHACHA_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
# draft-irtf-cfrg-xchacha-03, section A.3.1: ciphertext, then tag
XCHACHA_SEALED = bytes.fromhex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
    "c0875924c1c7987947deafd8780acf49"
)


def test_xchacha20poly1305_draft_vector() -> None:
    assert XAEAD_encrypt(XCHACHA_KEY, XCHACHA_NONCE, SUNSCREEN, XCHACHA_AAD) == XCHACHA_SEALED
    assert XAEAD_decrypt(XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_SEALED, XCHACHA_AAD) == SUNSCREEN


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=len(XCHACHA_SEALED) - 1), st.integers(1, 255))
def test_xchacha20poly1305_rejects_any_flipped_byte(index: int, mask: int) -> None:
    tampered = bytearray(XCHACHA_SEALED)
    tampered[index] ^= mask
    with pytest.raises(CryptoError):
        XAEAD_decrypt(XCHACHA_KEY, XCHACHA_NONCE, bytes(tampered), XCHACHA_AAD)


def test_xchacha20poly1305_rejects_wrong_nonce_aad_and_short_input() -> None:
    other_nonce = XCHACHA_NONCE[:-1] + b"\x00"
    with pytest.raises(CryptoError):
        XAEAD_decrypt(XCHACHA_KEY, other_nonce, XCHACHA_SEALED, XCHACHA_AAD)
    with pytest.raises(CryptoError):
        XAEAD_decrypt(XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_SEALED, b"")
    with pytest.raises(CryptoError):
        XAEAD_decrypt(XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_SEALED[:15], XCHACHA_AAD)
    with pytest.raises(ValueError):
        XAEAD_encrypt(XCHACHA_KEY, XCHACHA_NONCE[:12], b"", b"")


# --- ChaCha20-Poly1305 with WireGuard's nonce -------------------------------------------------


@pytest.mark.parametrize("counter", [0, 1, 0x0102030405060708, 2**64 - 1])
def test_aead_nonce_is_zero_prefix_then_le_counter(counter: int) -> None:
    key = bytes(range(32))
    nonce = b"\x00" * 4 + counter.to_bytes(8, "little")
    sealed = AEAD_encrypt(key, counter, b"payload", b"ad")
    assert sealed == ChaCha20Poly1305(key).encrypt(nonce, b"payload", b"ad")
    assert AEAD_decrypt(key, counter, sealed, b"ad") == b"payload"


def test_aead_rejects_wrong_counter_key_aad_and_bad_counters() -> None:
    key = bytes(range(32))
    sealed = AEAD_encrypt(key, 5, b"", b"h")
    assert len(sealed) == crypto.TAG_LEN
    for args in [(key, 6, sealed, b"h"), (bytes(32), 5, sealed, b"h"), (key, 5, sealed, b"")]:
        with pytest.raises(CryptoError):
            AEAD_decrypt(*args)
    with pytest.raises(CryptoError):
        AEAD_decrypt(key, 5, sealed[:-1], b"h")
    for counter in (-1, 2**64):
        with pytest.raises(ValueError):
            AEAD_encrypt(key, counter, b"", b"")


# --- Curve25519 (RFC 7748 section 6.1) --------------------------------------------------------

ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_rfc7748_vectors() -> None:
    assert crypto.public_key(ALICE_PRIVATE) == ALICE_PUBLIC
    assert crypto.public_key(BOB_PRIVATE) == BOB_PUBLIC
    assert DH(ALICE_PRIVATE, BOB_PUBLIC) == SHARED
    assert DH(BOB_PRIVATE, ALICE_PUBLIC) == SHARED


def test_dh_refuses_low_order_points() -> None:
    with pytest.raises(CryptoError):
        DH(ALICE_PRIVATE, bytes(32))  # u = 0
    with pytest.raises(CryptoError):
        DH(ALICE_PRIVATE, (1).to_bytes(32, "little"))  # u = 1, order 1
    with pytest.raises(ValueError):
        DH(ALICE_PRIVATE, BOB_PUBLIC[:31])


def test_generated_private_keys_are_clamped_and_fresh() -> None:
    first, second = crypto.generate_private_key(), crypto.generate_private_key()
    assert first != second
    for key in (first, second):
        assert len(key) == 32
        assert key[0] & 7 == 0 and key[31] & 0x80 == 0 and key[31] & 0x40
        assert crypto.clamp(key) == key
    assert crypto.clamp(b"\xff" * 32) == b"\xf8" + b"\xff" * 30 + b"\x7f"


# --- BLAKE2s, HMAC and the KDF chain ----------------------------------------------------------


def test_hash_of_the_construction_is_the_published_constant() -> None:
    assert HASH(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s") == bytes.fromhex(
        "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    )


def test_mac_is_keyed_blake2s_128_as_openssl_computes_it() -> None:
    # printf 'hello wireguard' | openssl mac -macopt hexkey:000102..1f -macopt size:16 BLAKE2SMAC
    assert MAC(bytes(range(32)), b"hello wireguard") == bytes.fromhex(
        "d7ced850c9c0917a705fad04539c3a01"
    )


HMAC_MESSAGE = b"wireguard hmac-blake2s vector"


def test_hmac_blake2s_vectors() -> None:
    assert HMAC(bytes(range(32)), HMAC_MESSAGE) == bytes.fromhex(
        "8c4c063b533b2d34800d148200ab6ef98f87751f673a8c13af5d2ee3794ecd26"
    )
    long_key = bytes((i * 7) & 0xFF for i in range(100))
    assert HMAC(long_key, HMAC_MESSAGE) == bytes.fromhex(
        "21381bd6d3e1587acc6e924c7124888f27a8aa419ea1ab21c2d959ddae4342e4"
    )


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=130), st.binary(max_size=200))
def test_hmac_agrees_with_openssl(key: bytes, data: bytes) -> None:
    reference = openssl_hmac.HMAC(key, hashes.BLAKE2s(32))
    reference.update(data)
    assert HMAC(key, data) == reference.finalize()


def test_kdf_chain_vectors_and_prefix_agreement() -> None:
    chaining_key = HASH(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
    data = bytes(range(0xA0, 0xC0))
    t1, t2, t3 = (
        bytes.fromhex("01c60c3cca9f140e11e55e302d1d34c3a812781c5a8137b2164e4fb3f7940b12"),
        bytes.fromhex("0d62641054b13a75421848b67947d571d01736e9356ba41edf250bc816f7cc45"),
        bytes.fromhex("27bc6978c99652c19d54c6c67486f19563d8ef8add6b92b4f8f060d24b0b6a0d"),
    )
    assert KDF1(chaining_key, data) == t1
    assert KDF2(chaining_key, data) == (t1, t2)
    assert KDF3(chaining_key, data) == (t1, t2, t3)


# --- encodings --------------------------------------------------------------------------------


def test_base64_keys_as_wg_prints_them() -> None:
    text = crypto.key_to_base64(ALICE_PUBLIC)
    assert len(text) == 44 and text.endswith("=")
    assert text == "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
    assert crypto.key_from_base64(text) == ALICE_PUBLIC


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",  # no padding
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm==",  # 31 bytes
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqqb!mo=",  # not base64
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmé=",  # not ASCII
    ],
)
def test_base64_rejects_malformed_keys_without_echoing_them(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        crypto.key_from_base64(bad)
    assert bad not in str(info.value) or not bad


def test_constant_time_equal() -> None:
    assert crypto.constant_time_equal(b"abc", b"abc")
    assert not crypto.constant_time_equal(b"abc", b"abd")
    assert not crypto.constant_time_equal(b"abc", b"ab")
